"""The C paged-attention kernel for CPUs against the torch reference path, and the engine's choice."""

from __future__ import annotations

import shutil

import pytest
import torch

from nodes.llm.attention import AttentionMetadata, attend, new_kv_cache
from nodes.llm.config import EngineConfig
from nodes.llm.cpu_attention import load_kernel
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler"
)


def _batch(dtype, heads, kv, head_dim, layout, seed=0):
    """A cache with random contents, 3 decode rows of different lengths and a prefill chunk."""
    gen = torch.Generator().manual_seed(seed)
    nb, bs = 16, 4
    if layout == "head-major":
        k_cache, v_cache = (new_kv_cache(nb, bs, kv, head_dim, dtype, "cpu") for _ in range(2))
    else:
        k_cache, v_cache = torch.zeros(2, nb, bs, kv, head_dim, dtype=dtype)
    k_cache.copy_(torch.randn(k_cache.shape, generator=gen))
    v_cache.copy_(torch.randn(v_cache.shape, generator=gen))
    tables = [[9, 2, 14], [5], [0, 11, 3, 7], [6, 1]]
    lens = [10, 3, 15]  # decodes at positions 9, 2, 14 (not block-aligned, padded tables)
    width = max(len(t) for t in tables[:3])
    flat = [b for t in tables[:3] for b in t + [0] * (width - len(t))]
    bias = torch.zeros(3, width * bs).masked_fill_(
        torch.arange(width * bs) >= torch.tensor(lens)[:, None], float("-inf")
    )
    positions = [(0, 9), (1, 2), (2, 14), (3, 5), (3, 6), (3, 7)]  # row 3: a chunk at 5..7
    slots = torch.tensor([tables[r][p // bs] * bs + p % bs for r, p in positions])
    q = torch.randn(6, heads, head_dim, generator=gen).to(dtype)
    qkv = torch.randn(6, 2 * kv + 1, head_dim, generator=gen).to(dtype)  # k, v strided views
    meta = {
        "slot_mapping": slots, "num_decodes": 3, "decode_blocks": torch.tensor(flat),
        "decode_bias": bias.view(3, 1, 1, -1), "prefills": ((3, 3, 8, torch.tensor(tables[3])),),
    }  # fmt: skip
    return q, qkv[:, :kv], qkv[:, kv : 2 * kv], k_cache, v_cache, meta, lens


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["head-major", "plain"])
@pytest.mark.parametrize(("heads", "kv", "head_dim"), [(6, 2, 64), (4, 1, 32), (2, 2, 128)])
def test_kernel_matches_torch_reference(dtype, layout, heads, kv, head_dim):
    q, k, v, k_cache, v_cache, meta, lens = _batch(dtype, heads, kv, head_dim, layout)
    kernel = load_kernel(head_dim)
    assert kernel is not None and kernel.supports(k_cache)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    expected = attend(q, k, v, expected_k, expected_v, AttentionMetadata(**meta))
    with_kernel = AttentionMetadata(**meta, cpu_kernel=kernel, decode_lens=torch.tensor(lens))
    got = attend(q, k, v, k_cache, v_cache, with_kernel)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)  # same writes
    # fp32: reassociated sums; bf16: one rounding of the output (2^-8 relative) on |out| < ~3
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert (got.float() - expected.float()).abs().max() <= tolerance


@needs_compiler
def test_decode_only_batch_and_unsupported_caches():
    q, k, v, k_cache, v_cache, meta, lens = _batch(torch.float32, 6, 2, 64, "head-major")
    kernel = load_kernel(64)
    meta.update(slot_mapping=meta["slot_mapping"][:3], prefills=())
    expected = attend(
        q[:3], k[:3], v[:3], k_cache.clone(), v_cache.clone(), AttentionMetadata(**meta)
    )
    with_kernel = AttentionMetadata(**meta, cpu_kernel=kernel, decode_lens=torch.tensor(lens))
    got = attend(q[:3], k[:3], v[:3], k_cache, v_cache, with_kernel)
    assert got.shape == (3, 6 * 64) and (got - expected).abs().max() <= 1e-5
    assert not kernel.supports(k_cache.half())  # fp16 caches stay on the torch path
    assert not load_kernel(64).supports(new_kv_cache(4, 4, 2, 32, torch.float32, "cpu"))


@needs_compiler
def test_engine_greedy_tokens_are_the_same_with_either_backend(tiny_model_dir):
    config = {"dtype": "fp32", "block_size": 4, "kv_cache_bytes": 4 << 20, "max_model_len": 256}
    prompts = [list(range(100, 100 + n)) for n in (5, 17, 33)]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    torch_ops = LLMEngine(tiny_model_dir, EngineConfig(attention_backend="torch", **config))
    kernel = LLMEngine(tiny_model_dir, EngineConfig(attention_backend="cpu_kernel", **config))
    try:
        assert torch_ops.runner.cpu_kernel is None and kernel.runner.cpu_kernel is not None
        expected = [c.token_ids for c in torch_ops.generate(prompts, params)]
        assert [c.token_ids for c in kernel.generate(prompts, params)] == expected
    finally:
        torch_ops.shutdown()
        kernel.shutdown()


@needs_compiler
def test_loading_the_kernel_keeps_denormals(tmp_path, monkeypatch):
    # gcc links crtfastmath.o into a -ffast-math shared library, which sets flush-to-zero for the
    # whole process when it loads; the kernel is linked without it
    load_kernel.cache_clear()
    monkeypatch.setenv("PIPECTL_KERNEL_CACHE", str(tmp_path))
    try:
        assert load_kernel(48) is not None
        tiny = torch.tensor([1e-40])
        assert (tiny * 1.0).item() > 0.0
    finally:
        load_kernel.cache_clear()


def test_attention_backend_is_checked():
    with pytest.raises(ValueError, match="attention_backend 'flash'.*auto, torch, cpu_kernel"):
        EngineConfig(attention_backend="flash")
    # the kernel never takes an fp16 cache: refused when the file is checked, not at load
    with pytest.raises(ValueError, match="cpu_kernel reads fp32 or bf16 KV caches, not fp16"):
        EngineConfig(dtype="fp16", attention_backend="cpu_kernel")


def test_no_compiler_means_torch_ops_or_a_clear_error(tiny_model_dir, monkeypatch, tmp_path):
    load_kernel.cache_clear()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("PIPECTL_KERNEL_CACHE", str(tmp_path / "kernels"))
    try:
        config = {"dtype": "fp32", "kv_cache_bytes": 1 << 20}
        engine = LLMEngine(tiny_model_dir, EngineConfig(**config))
        assert engine.runner.cpu_kernel is None
        engine.shutdown()
        with pytest.raises(ValueError, match="cpu_kernel: the C kernel could not be built"):
            LLMEngine(tiny_model_dir, EngineConfig(attention_backend="cpu_kernel", **config))
    finally:
        load_kernel.cache_clear()
