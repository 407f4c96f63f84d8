"""Weights kept quantized at run time, and the linear layers that compute with them on a CPU.

A `QuantizedWeight` holds a [N, K] weight (N output rows, K inputs) as integer codes with one scale
(and for int4 one offset) per row and group of K:

- int8: `w[n, k] = codes[n, k] * scale[n, k // group]`, codes int8 (GGUF Q8_0: group 32; our
  symmetric per-channel int8: group K).
- int4: `w[n, k] = codes[n, k] * scale[n, k // group] + offset[n, k // group]`, codes 0..15 (GGUF
  Q4_1: scale d, offset m; Q4_0 `d * (q - 8)`: scale d, offset -8d; our min/max int4: group 32).

Block formats: ggml's `ggml-common.h` (block_q4_0, block_q4_1, block_q8_0, QK = 32).

`make_linear` turns a weight into a callable `x [M, K] -> [M, N]`:
- dense fp32 on CPU: MKL's prepacked sgemm (`torch.ops.mkl._mkl_linear`), packed once at load;
  the plain `F.linear` repacks the weight on every call (15% of a decode step in a profile);
- dense bf16 on CPU with native bf16: oneDNN's prepacked linear (`_linear_pointwise`);
- int8: `torch.ops.aten._weight_int8pack_mm` (per output channel scales);
- int4: `torch.ops.aten._weight_int4pack_mm_for_cpu`, which computes `(q - 8) * s + z` per group.
Both quantized kernels run with bf16 activations: their fp32 and fp16 paths in torch 2.13 are
scalar and 40-100x slower. The output comes back in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GROUP = 32  # ggml's QK4_0 / QK4_1 / QK8_0
QUANTIZATIONS = ("auto", "none", "int8", "int4")


@dataclass(slots=True)
class QuantizedWeight:
    """A [N, K] weight as codes [N, K] (uint8 0..15 for int4, int8 for int8), scale [N, K/group]
    float32 and, for int4, offset [N, K/group] float32."""

    kind: str  # int8 | int4
    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor | None
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [N, K] the codes stand for."""
        n, k = self.codes.shape
        w = self.codes.float().view(n, k // self.group, self.group) * self.scale[..., None]
        if self.offset is not None:
            w = w + self.offset[..., None]
        return w.view(n, k)

    def embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` dequantized: float32 [len(ids), K] (an embedding lookup)."""
        n, k = len(ids), self.codes.shape[1]
        w = (
            self.codes[ids].float().view(n, k // self.group, self.group)
            * self.scale[ids][..., None]
        )
        if self.offset is not None:
            w = w + self.offset[ids][..., None]
        return w.view(n, k)

    def rows(self, fn: Callable[[np.ndarray], np.ndarray]) -> QuantizedWeight:
        """The same weight with `fn` (a permutation of rows, as numpy) applied to every part."""
        parts = [self.codes, self.scale, self.offset]
        out = [None if p is None else torch.from_numpy(np.ascontiguousarray(fn(p.numpy())))
               for p in parts]  # fmt: skip
        return QuantizedWeight(self.kind, out[0], out[1], out[2], self.group)


def cat_rows(weights: list) -> torch.Tensor | QuantizedWeight:
    """Stack weights along N (q/k/v, gate/up); quantized ones stay quantized if all are alike."""
    if all(isinstance(w, torch.Tensor) for w in weights):
        return torch.cat(weights)
    kinds = {(w.kind, w.group) if isinstance(w, QuantizedWeight) else None for w in weights}
    if len(kinds) != 1:  # mixed formats: compute the fused weight densely
        return torch.cat([as_float(w) for w in weights])
    first = weights[0]
    offsets = None if first.offset is None else torch.cat([w.offset for w in weights])
    return QuantizedWeight(
        first.kind, torch.cat([w.codes for w in weights]), torch.cat([w.scale for w in weights]),
        offsets, first.group,
    )  # fmt: skip


def as_float(weight) -> torch.Tensor:
    return weight.dequantize() if isinstance(weight, QuantizedWeight) else weight.float()


def quantize_int8(w: torch.Tensor) -> QuantizedWeight:
    """Symmetric per-output-channel int8: scale = max|w[n]| / 127, codes = round(w / scale).
    Error per element <= scale / 2."""
    w = as_float(w)
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return QuantizedWeight("int8", codes, scale, None, w.shape[1])


def quantize_int4(w: torch.Tensor, group: int = GROUP) -> QuantizedWeight:
    """Asymmetric int4 per group of `group` inputs (as ggml's Q4_1): scale = (max - min) / 15,
    offset = min, codes = round((w - min) / scale). Error per element <= scale / 2."""
    if isinstance(w, QuantizedWeight) and w.kind == "int4" and w.group == group:
        return w
    w = as_float(w)
    n, k = w.shape
    if k % group:
        raise ValueError(f"int4 needs in_features divisible by {group}, got {k}")
    g = w.view(n, k // group, group)
    low, high = g.amin(-1), g.amax(-1)
    scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round((g - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8)
    return QuantizedWeight("int4", codes.view(n, k), scale, low, group)


def to_kind(w, kind: str):
    """The weight in `kind` (none | int8 | int4); int8 weights with groups become per-channel."""
    if kind == "none":
        return as_float(w)
    if kind == "int4":
        return quantize_int4(w)
    if isinstance(w, QuantizedWeight) and w.kind == "int8" and w.group == w.shape[1]:
        return w
    return quantize_int8(w)


def resolve(weights: dict, names: list[str], head: str, quantization: str) -> dict:
    """The linear weights `names` and the LM head `head` in the form `quantization` asks for.

    auto: as loaded (GGUF's quantized blocks stay quantized; float checkpoints stay dense);
    none: all dense; int8: all weight-only int8; int4: layers int4 (groups of 32), LM head int8.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r} unsupported; choose from {QUANTIZATIONS}")
    if quantization == "auto":
        return {name: weights[name] for name in [*names, head]}
    out = {name: to_kind(weights[name], quantization) for name in names}
    out[head] = to_kind(weights[head], "none" if quantization == "none" else "int8")
    return out


def make_linear(weight, dtype: torch.dtype, device: torch.device):
    """A callable `x [M, K] (dtype) -> [M, N] (dtype)` computing `x @ weight.T`."""
    if isinstance(weight, QuantizedWeight):
        if device.type == "cpu":
            return (
                _Int8Linear(weight, dtype) if weight.kind == "int8" else _Int4Linear(weight, dtype)
            )
        weight = weight.dequantize()  # no CUDA kernel for these layouts here: compute densely
    w = weight.to(device=device, dtype=dtype).contiguous()
    if device.type == "cpu" and dtype == torch.float32 and torch.backends.mkl.is_available():
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, 64)
        return _MklLinear(packed, w)
    if device.type == "cpu" and dtype == torch.bfloat16 and _onednn_bf16():
        return _OneDnnLinear(torch.ops.mkldnn._reorder_linear_weight(w, 64), w.shape[0])
    return _DenseLinear(w)


def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class _DenseLinear:
    __slots__ = ("weight",)

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        return F.linear(x, self.weight)


class _MklLinear:
    __slots__ = ("packed", "weight")

    def __init__(self, packed, weight):
        self.packed, self.weight = packed, weight  # MKL keeps the original for its checks

    def __call__(self, x):
        return torch.ops.mkl._mkl_linear(x.contiguous(), self.packed, self.weight, None, 64)


class _OneDnnLinear:
    __slots__ = ("out", "packed")

    def __init__(self, packed, out):
        self.packed, self.out = packed, out

    def __call__(self, x):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, None, "none", [], "")


class _Int8Linear:
    __slots__ = ("codes", "dtype", "scale")

    def __init__(self, w: QuantizedWeight, dtype):
        if w.group != w.shape[1]:
            w = quantize_int8(w.dequantize())  # the kernel has one scale per output channel
        self.codes = w.codes.contiguous()
        self.scale = w.scale.view(-1).to(torch.bfloat16)
        self.dtype = dtype

    def __call__(self, x):
        y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.codes, self.scale)
        return y.to(self.dtype)


# From this many rows (prefill chunks, big batches) an int4 product is computed densely from the
# weight dequantized on the fly: torch's CPU int4 kernel is 1.8-2.3x slower than MKL's fp32
# GEMM from M = 64 on (one thread, [M,576]x[576,1536]: M=256 6.7 vs 2.9 ms), and unpacking and
# dequantizing such a matrix costs ~2-3 ms: with it, M=256 took 6.6 ms against the kernel's 7.3,
# M=2048 26 against 59 (M=128: 5.0 against 3.5)
DENSE_FROM_ROWS = 256


class _Int4Linear:
    __slots__ = ("bias_rows", "dtype", "group", "nibbles", "offset", "packed", "scale",
                 "scale_zeros")  # fmt: skip

    def __init__(self, w: QuantizedWeight, dtype):
        # w = q * s + offset = (q - 8) * s + z with z = offset + 8 s. The kernel takes s and z in
        # bf16; a z rounded to bf16 shifts all 32 weights of a group alike, an error that real
        # activations (with a non-zero mean per group) do not average out. So the kernel gets
        # z = 0 and the z term, sum over groups of (sum of x in the group) * z, is added in fp32.
        self.scale_zeros = torch.stack([w.scale.t(), torch.zeros_like(w.scale.t())], -1)
        self.scale_zeros = self.scale_zeros.to(torch.bfloat16).contiguous()
        self.bias_rows = (w.offset + 8 * w.scale).t().contiguous()  # [K/group, N] float32
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w.codes.to(torch.int32), 2)
        self.group, self.dtype = w.group, dtype
        # the codes again, two per byte (torch's packed layout is its own), for the dense path
        codes = w.codes.to(torch.uint8)
        self.nibbles = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
        self.scale, self.offset = w.scale.contiguous(), w.offset.contiguous()

    def dense(self) -> torch.Tensor:
        """The float32 weight [N, K], as QuantizedWeight.dequantize gives it."""
        n, half = self.nibbles.shape
        codes = torch.stack([self.nibbles & 15, self.nibbles >> 4], -1).view(n, -1, self.group)
        w = codes.float() * self.scale[..., None] + self.offset[..., None]
        return w.view(n, 2 * half)

    def __call__(self, x):
        m, k = x.shape
        if m >= DENSE_FROM_ROWS:
            return F.linear(x.float(), self.dense()).to(self.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16).contiguous(), self.packed, self.group, self.scale_zeros
        )
        sums = x.float().view(m, k // self.group, self.group).sum(-1)
        if m == 1:
            # MKL computes a one-row product as a GEMV, whose sums round differently from its
            # GEMM's; from two rows on each row's result did not depend on the others (tested
            # for 1-255 rows). A speculative check runs a token in a chunk of k + 1 rows, its
            # plain decode in a row alone: they must agree to keep greedy output identical.
            bias = torch.mm(F.pad(sums, (0, 0, 0, 1)), self.bias_rows)[:1]
        else:
            bias = torch.mm(sums, self.bias_rows)
        return (y.float() + bias).to(self.dtype)
