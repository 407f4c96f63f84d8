"""The element-wise parts of a Llama layer: residual add + RMSNorm, RoPE, SiLU×up.

`TorchOps` runs them as torch ops on any device and dtype. `FusedOps` runs each in one pass in C
(`fused_ops.c`, built with the paged-attention kernel, nodes/llm/cpu_attention.py) for fp32 on
a CPU: at a decode step's 64 tokens torch's 2-6 ops per part cost as much in dispatch as in
arithmetic. Both compute the same formulas (model.py's docstring names them); FusedOps updates
the residual stream `x` and the q/k heads of `qkv` in place, where TorchOps returns new tensors.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

_P, _I64, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


class TorchOps:
    """The reference: torch ops, any device and dtype."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, eps: float):
        self.cos, self.sin, self.eps = cos, sin, eps  # [max_len, head_dim] in the model's dtype

    def add_rms_norm(self, x, delta, weight):
        """(x + delta, RMSNorm(x + delta) * weight); delta may be None."""
        if delta is not None:
            x = x + delta
        return x, weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def rope(self, qkv: torch.Tensor, positions: torch.Tensor, heads: int):
        """The first `heads` heads of qkv [T, heads + more, D] rotated (rotate-half form)."""
        half = qkv.shape[-1] // 2
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        qk = qkv[:, :heads]
        rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
        return qk * cos + rotated * sin

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up


class FusedOps(TorchOps):
    """The same in C, fp32 on CPU, one pass per part; `x` and `qkv` are updated in place."""

    def __init__(self, lib: ctypes.CDLL, cos: torch.Tensor, sin: torch.Tensor, eps: float):
        super().__init__(cos.contiguous(), sin.contiguous(), eps)
        self._norm, self._silu, self._rope = lib.add_rms_norm, lib.silu_mul, lib.rope
        self._norm.argtypes = [_P, _P, _P, _P, _I64, _I64, _F]
        self._silu.argtypes = [_P, _P, _I64, _I64]
        self._rope.argtypes = [_P, _P, _P, _P, _I64, _I64, _I64, _I64]
        for fn in (self._norm, self._silu, self._rope):
            fn.restype = None

    @staticmethod
    def applies(x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()

    def add_rms_norm(self, x, delta, weight):
        if not (self.applies(x) and (delta is None or self.applies(delta))):
            return super().add_rms_norm(x, delta, weight)
        out = torch.empty_like(x)
        tokens, n = x.shape
        self._norm(x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(),
                   out.data_ptr(), tokens, n, self.eps)  # fmt: skip
        return x, out

    def rope(self, qkv, positions, heads):
        if not self.applies(qkv) or positions.dtype != torch.int64:
            return super().rope(qkv, positions, heads)
        tokens, width, head_dim = qkv.shape
        positions = positions.contiguous()
        self._rope(qkv.data_ptr(), self.cos.data_ptr(), self.sin.data_ptr(),
                   positions.data_ptr(), tokens, heads, width * head_dim, head_dim)  # fmt: skip
        return qkv[:, :heads]

    def silu_mul(self, gate_up):
        if not self.applies(gate_up):
            return super().silu_mul(gate_up)
        tokens, n = gate_up.shape[0], gate_up.shape[1] // 2
        out = gate_up.new_empty(tokens, n)
        self._silu(gate_up.data_ptr(), out.data_ptr(), tokens, n)
        return out
