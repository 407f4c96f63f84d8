"""The C paged-attention kernel for CPUs: decode rows read their K/V blocks where they lie.

The torch path gathers every decoding sequence's blocks into one padded tensor (a copy of all
K/V, padded to the longest sequence) before two batched matmuls; in a decode step at batch 64
that took about a third of the time. `paged_attention.c` walks each sequence's block table
instead, up to its own length, and also writes new K/V into their slots (one call for all KV
heads, where `index_copy_` took two calls per layer).

It is compiled at first use with the system C compiler (`$CC`, else `cc`/`gcc`), with
`-O3 -march=native -ffast-math`, once per head_dim, into `$PIPECTL_KERNEL_CACHE` (default
`~/.cache/pipectl/kernels`) under a name that hashes the source, the flags and this CPU's flags,
and is loaded with ctypes; the same library holds `fused_ops.c` (RMSNorm, RoPE and SiLU×up in one
pass each, nodes/llm/layer_ops.py). `load_kernel` returns None where there is no compiler or the build
fails, and the engine keeps the torch path.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch
import torch.autograd.profiler
from torch.profiler import record_function

log = logging.getLogger(__name__)
SOURCES = tuple(Path(__file__).with_name(f) for f in ("paged_attention.c", "fused_ops.c"))
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC")  # compile only: see _build
_P, _I64 = ctypes.c_void_p, ctypes.c_int64


_UNNAMED = contextlib.nullcontext()


def _named(name: str):
    """`record_function(name)` while a torch profiler runs (its tables then name the kernel's
    calls), else nothing: entering one costs ~6 µs, 0.4 ms of a 27 ms decode step at batch 1."""
    profiling = getattr(torch.autograd.profiler, "_is_profiler_enabled", True)
    return record_function(name) if profiling else _UNNAMED


class _Shape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "n", "heads", "kv_heads", "block_size", "width", "kv_stride", "block_stride", "slot_stride"
    )] + [("scale", ctypes.c_float)]  # fmt: skip


class CpuAttention:
    """The loaded kernel for one head_dim: `store` and `decode` on [num_blocks, block_size,
    KV, D] cache views whose last dim is contiguous, in fp32 or bf16."""

    def __init__(self, lib: ctypes.CDLL, head_dim: int):
        self.lib, self.head_dim = lib, head_dim  # lib also holds fused_ops.c (layer_ops.py)
        self._decode = {torch.float32: lib.paged_decode_f32, torch.bfloat16: lib.paged_decode_bf16}
        for fn in self._decode.values():
            fn.argtypes, fn.restype = [_P] * 7 + [ctypes.POINTER(_Shape)], None
        self._store = lib.paged_store
        self._store.argtypes = [_P] * 5 + [_I64, _P, _P, ctypes.POINTER(_Shape), _I64]
        self._store.restype = None

    def supports(self, cache: torch.Tensor) -> bool:
        """Whether this kernel can read and write `cache` [num_blocks, block_size, KV, D]."""
        return (
            cache.device.type == "cpu" and cache.dtype in self._decode
            and cache.shape[3] == self.head_dim and cache.stride(3) == 1
        )  # fmt: skip

    @staticmethod
    def _shape(cache: torch.Tensor, **kw) -> _Shape:
        return _Shape(block_size=cache.shape[1], kv_heads=cache.shape[2],
                      block_stride=cache.stride(0), slot_stride=cache.stride(1),
                      kv_stride=cache.stride(2), **kw)  # fmt: skip

    def store(self, k, v, k_cache, v_cache, slots: torch.Tensor) -> None:
        """k, v [T, KV, D] (last dim contiguous) into their slots; slots [T] int64."""
        assert k.stride(2) == 1 and v.stride(2) == 1 and slots.dtype == torch.int64
        k_strides = (ctypes.c_int64 * 2)(k.stride(0), k.stride(1))
        v_strides = (ctypes.c_int64 * 2)(v.stride(0), v.stride(1))
        slots = slots.contiguous()
        with _named("pipectl::paged_store"):
            self._store(k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                        slots.data_ptr(), k.shape[0], k_strides, v_strides,
                        ctypes.byref(self._shape(k_cache)), k_cache.element_size())  # fmt: skip

    def decode(self, q, k_cache, v_cache, blocks: torch.Tensor, lens: torch.Tensor):
        """q [n, H, D] → [n, H*D]: row i attends to the first lens[i] tokens of blocks[i].

        blocks [n, width] int64 (padding never read), lens [n] int64, each in 1..width*block_size.
        """
        n, heads, head_dim = q.shape
        q, blocks, lens = q.contiguous(), blocks.contiguous(), lens.contiguous()
        assert blocks.dtype == lens.dtype == torch.int64 and len(lens) == n
        out = torch.empty_like(q)
        scratch = torch.empty(heads // k_cache.shape[2] * blocks.shape[1] * k_cache.shape[1])
        shape = self._shape(k_cache, n=n, heads=heads, width=blocks.shape[1],
                            scale=head_dim**-0.5)  # fmt: skip
        with _named("pipectl::paged_decode"):
            self._decode[q.dtype](
                q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), blocks.data_ptr(),
                lens.data_ptr(), out.data_ptr(), scratch.data_ptr(), ctypes.byref(shape),
            )  # fmt: skip
        return out.view(n, heads * head_dim)


@cache
def load_kernel(head_dim: int) -> CpuAttention | None:
    """The kernel for `head_dim`, built if needed; None without a working C compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: paged attention runs on torch ops")
        return None
    try:
        return CpuAttention(ctypes.CDLL(str(_build(compiler, head_dim))), head_dim)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or b""
        log.warning("paged attention C kernel not built (%s %s): torch ops instead", exc,
                    detail.decode(errors="replace")[-2000:])  # fmt: skip
        return None


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.startswith("flags")), "")


def _build(compiler: str, head_dim: int) -> Path:
    flags = (*FLAGS, f"-DHEAD_DIM={head_dim}")
    parts = [*(source.read_bytes() for source in SOURCES), " ".join(flags).encode()]
    key = hashlib.sha256(b"\0".join([*parts, compiler.encode(), _cpu_flags().encode()]))
    key = key.hexdigest()[:16]
    cache = Path(os.environ.get("PIPECTL_KERNEL_CACHE") or Path.home() / ".cache/pipectl/kernels")
    target = cache / f"paged_attention_d{head_dim}_{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # built aside, then renamed: atomic
        built, objects = Path(tmp) / target.name, []
        for source in SOURCES:
            objects.append(str(Path(tmp) / f"{source.stem}.o"))
            _run([compiler, *flags, "-c", "-o", objects[-1], str(source)])
        # linked without -ffast-math: with it gcc adds crtfastmath.o, whose constructor turns on
        # flush-to-zero for the whole process (torch's denormals included) when the library loads
        _run([compiler, "-shared", "-o", str(built), *objects, "-lm"])
        os.replace(built, target)
    return target


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)
