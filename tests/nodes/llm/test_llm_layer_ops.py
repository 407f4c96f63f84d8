"""The fused C element-wise parts of a layer against their torch reference (fp32, CPU)."""

from __future__ import annotations

import shutil

import pytest
import torch

from nodes.llm.cpu_attention import load_kernel
from nodes.llm.layer_ops import FusedOps, TorchOps

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler"
)


@pytest.fixture
def ops():
    gen = torch.Generator().manual_seed(0)
    cos, sin = torch.randn(2, 40, 32, generator=gen)  # [max_len, head_dim] tables
    return TorchOps(cos, sin, 1e-5), FusedOps(load_kernel(32).lib, cos, sin, 1e-5), gen


def test_residual_add_and_rms_norm(ops):
    plain, fused, gen = ops
    x, delta = torch.randn(2, 7, 96, generator=gen)
    weight = torch.randn(96, generator=gen)
    want_x, want = plain.add_rms_norm(x.clone(), delta, weight)
    got_x, got = fused.add_rms_norm(x, delta, weight)
    assert got_x is x and torch.allclose(x, want_x, atol=0, rtol=0)  # residual added in place
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    _, alone = fused.add_rms_norm(x, None, weight)
    assert (alone - plain.add_rms_norm(x, None, weight)[1]).abs().max() <= 1e-5 * want.abs().max()


def test_rope_rotates_the_q_and_k_heads_only(ops):
    plain, fused, gen = ops
    qkv = torch.randn(5, 4 + 2 * 2, 32, generator=gen)  # 4 q heads, 2 k heads, 2 v heads
    positions = torch.tensor([0, 3, 39, 7, 7])
    want = plain.rope(qkv.clone(), positions, 6)
    v_before = qkv[:, 6:].clone()
    got = fused.rope(qkv, positions, 6)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert torch.equal(qkv[:, 6:], v_before)


def test_silu_times_up(ops):
    plain, fused, gen = ops
    gate_up = torch.randn(3, 2 * 80, generator=gen) * 6
    want = plain.silu_mul(gate_up)
    assert (fused.silu_mul(gate_up) - want).abs().max() <= 1e-5 * want.abs().max()


def test_other_dtypes_take_the_torch_path(ops):
    plain, fused, gen = ops
    x = torch.randn(3, 16, generator=gen).bfloat16()
    weight = torch.ones(16, dtype=torch.bfloat16)
    got_x, got = fused.add_rms_norm(x, x, weight)
    want_x, want = plain.add_rms_norm(x, x, weight)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want) and torch.equal(got_x, want_x)
