"""Weights kept quantized: ggml blocks read exactly, the int8/int4 CPU kernels against the
dequantized fp32 weights within what bf16 activations and scales promise, and the engine running
quantized end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.quant import DENSE_FROM_ROWS, make_linear, quantize_int4, quantize_int8
from nodes.llm.sampling import SamplingParams
from nodes.llm.weights import gguf_blocks

BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: relative rounding error <= 2^-9, doubled


def _ggml(kind: str, n: int = 8, k: int = 96, seed: int = 0):
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[kind]
    w = np.random.default_rng(seed).normal(0, 0.05, (n, k)).astype(np.float32)
    w[:, :32] += 0.2  # a group with a non-zero mean: the offset matters
    raw = quantize(w, qtype)
    return raw, torch.from_numpy(np.array(dequantize(raw, qtype), dtype=np.float32))


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
def test_ggml_blocks_read_exactly(kind):
    raw, reference = _ggml(kind)
    weight = gguf_blocks(raw, kind, tuple(reference.shape))
    assert weight.kind == ("int8" if kind == "Q8_0" else "int4")
    assert torch.equal(weight.dequantize(), reference)  # bit for bit what gguf dequantizes
    rows = torch.tensor([5, 0, 5])
    assert torch.equal(weight.embedding(rows), reference[rows])


def _bound(x: torch.Tensor, w: torch.Tensor, rel: float) -> torch.Tensor:
    """|error| allowed per output: `rel` of sum |x_k w_nk| (products rounded with relative error
    `rel` at most; fp32 accumulation adds far less) plus a bf16 rounding of the output."""
    magnitude = x.abs() @ w.abs().t()
    return rel * magnitude + BF16_EPS * (x @ w.t()).abs() + 1e-6


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("rows", [1, 5, 64, DENSE_FROM_ROWS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_linear_against_dequantized_fp32(kind, rows, dtype):
    raw, w = _ggml(kind, n=48, k=128, seed=rows)
    weight = gguf_blocks(raw, kind, tuple(w.shape))
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(rows)) + 0.5
    got = make_linear(weight, dtype, torch.device("cpu"))(x.to(dtype)).float()
    # activations and scales are rounded to bf16 (each <= 2^-9 relative); Q8_0 is first
    # re-quantized to one scale per row (error <= that scale / 2 per weight, checked below)
    reference = x.to(dtype).float() @ w.t()
    rel = 2 * BF16_EPS
    if kind == "Q8_0":
        per_row = quantize_int8(w)
        reference = x.to(dtype).float() @ per_row.dequantize().t()
    assert ((got - reference).abs() <= _bound(x, w, rel)).all()


def test_int4_from_dense_from_rows_is_the_dequantized_product_in_fp32():
    """Prefill-sized products run densely on the weight dequantized on the fly: the same values
    QuantizedWeight.dequantize gives, so fp32 activations meet an fp32 GEMM's rounding only."""
    weight = quantize_int4(torch.randn(96, 128, generator=torch.Generator().manual_seed(1)))
    linear = make_linear(weight, torch.float32, torch.device("cpu"))
    assert torch.equal(linear.dense(), weight.dequantize())
    x = torch.randn(DENSE_FROM_ROWS, 128, generator=torch.Generator().manual_seed(2))
    reference = x.double() @ weight.dequantize().double().t()
    fp32_bound = 128 * torch.finfo(torch.float32).eps * (x.abs() @ weight.dequantize().abs().t())
    assert ((linear(x).double() - reference).abs() <= fp32_bound.double()).all()


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_a_row_comes_out_the_same_alone_and_in_a_chunk(kind):
    """A speculative check computes a token in a chunk of k + 1 rows, plain decoding in a row
    alone (and batches put rows side by side): bit for bit the same, or greedy output drifts."""
    quantize = quantize_int4 if kind == "int4" else quantize_int8
    weight = quantize(torch.randn(1536, 576, generator=torch.Generator().manual_seed(4)) * 0.05)
    linear = make_linear(weight, torch.float32, torch.device("cpu"))
    x = torch.randn(80, 576, generator=torch.Generator().manual_seed(5))
    alone = torch.cat([linear(x[i : i + 1]) for i in range(len(x))])
    for rows in (2, 3, 5, 17, 64):
        assert torch.equal(linear(x[:rows]), alone[:rows]), rows


def test_quantize_int8_and_int4_errors_within_half_a_step():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    q8 = quantize_int8(w)
    assert ((q8.dequantize() - w).abs() <= q8.scale / 2 * (1 + 1e-6)).all()
    q4 = quantize_int4(w)
    step = q4.scale.repeat_interleave(32, dim=1)
    assert ((q4.dequantize() - w).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all()
    assert q4.codes.max() <= 15 and q4.codes.dtype == torch.uint8


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_engine_runs_hf_folder_quantized(tiny_model_dir, quantization):
    """The HF folder quantized at load generates, and its first-token logits stay near fp32's."""
    prompts = [[5, 9, 33, 71, 12], [100, 7, 7, 3]]
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=True)
    results = {}
    for q in ("none", quantization):
        config = EngineConfig(dtype="fp32", kv_cache_bytes=4 << 20, quantization=q)
        engine = LLMEngine(tiny_model_dir, config)
        try:
            if q != "none":
                kinds = {type(proj).__name__ for layer in engine.runner.model.layers
                         for proj in (layer[1], layer[2], layer[4], layer[5])}  # fmt: skip
                assert kinds == {f"_{quantization.capitalize()}Linear"}
            results[q] = engine.generate(prompts, params)
        finally:
            engine.shutdown()
    for dense, quant in zip(results["none"], results[quantization]):
        assert quant.completion_tokens == 6
        # the first token's logprob under each model: close, not equal (the weights differ)
        assert abs(dense.logprobs[0] - quant.logprobs[0]) < 0.5


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match="quantization 'fp8'"):
        EngineConfig(quantization="fp8")
