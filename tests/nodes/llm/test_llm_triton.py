"""The CUDA paged-attention kernel (Triton) against the CPU reference path; needs a GPU."""

from __future__ import annotations

import pytest
import torch

from nodes.llm.attention import AttentionMetadata, attend, triton_available
from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not triton_available("cuda"), reason="needs CUDA and triton"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_cpu_reference_for_decode_and_prefill_tokens(dtype):
    torch.manual_seed(0)
    nb, bs, kv, d, heads = 12, 4, 2, 64, 6  # group of 3 query heads per KV head
    k_cache, v_cache = torch.randn(2, nb, bs, kv, d, dtype=dtype)
    tables = [[3, 7, 1], [0, 5]]
    tokens = [(0, 8), (1, 5), (1, 6), (1, 7)]  # a decode at position 8; a chunk at 5..7
    q = torch.randn(4, heads, d, dtype=dtype)
    k, v = torch.randn(2, 4, kv, d, dtype=dtype)
    slots = torch.tensor([tables[r][p // bs] * bs + p % bs for r, p in tokens])
    bias = torch.zeros(1, 1, 1, 12).masked_fill_(torch.arange(12) >= 9, float("-inf"))
    cpu_meta = AttentionMetadata(
        slot_mapping=slots, num_decodes=1, decode_blocks=torch.tensor(tables[0]),
        decode_bias=bias, prefills=((1, 3, 8, torch.tensor(tables[1])),),
    )  # fmt: skip
    expected = attend(q, k, v, k_cache.clone(), v_cache.clone(), cpu_meta)
    cuda_meta = AttentionMetadata(
        slot_mapping=slots.cuda(),
        token_rows=torch.tensor([r for r, _ in tokens], dtype=torch.int32, device="cuda"),
        token_positions=torch.tensor([p for _, p in tokens], dtype=torch.int32, device="cuda"),
        block_tables=torch.tensor([t + [0] * (3 - len(t)) for t in tables], dtype=torch.int32,
                                  device="cuda"),
    )  # fmt: skip
    got = attend(q.cuda(), k.cuda(), v.cuda(), k_cache.cuda(), v_cache.cuda(), cuda_meta)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    assert (got.cpu().float() - expected.float()).abs().max() <= tolerance


def test_engine_on_cuda_gives_the_cpu_greedy_tokens(tiny_model_dir):
    config = {"dtype": "fp32", "block_size": 4, "kv_cache_bytes": 4 << 20, "max_model_len": 256}
    prompts = [list(range(100, 100 + n)) for n in (5, 17, 33)]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    cpu = LLMEngine(tiny_model_dir, EngineConfig(**config))
    gpu = LLMEngine(tiny_model_dir, EngineConfig(device="cuda", **config))
    try:
        assert gpu.runner.use_triton
        expected = [c.token_ids for c in cpu.generate(prompts, params)]
        assert [c.token_ids for c in gpu.generate(prompts, params)] == expected
    finally:
        cpu.shutdown()
        gpu.shutdown()
