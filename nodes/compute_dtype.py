"""The dtype a node instance computes in: `dtype: auto` resolves, per placed instance, to the
fastest dtype its device computes natively.

| device | auto resolves to                                                        |
|--------|-------------------------------------------------------------------------|
| cpu    | bf16 where the CPU has bf16 instructions (AMX-BF16, AVX512-BF16, Arm    |
|        | BF16), else fp32: elsewhere bf16 is emulated (8x slower than fp32 on a  |
|        | Zen 3 AVX2 machine, BENCHMARKS.md)                                      |
| cuda:N | bf16 from compute capability 8.0 (Ampere) on, else fp16                 |

Explicit `fp32`, `bf16` and `fp16` are honoured as given; `bf16_slowdown` names the cost of an
explicit bf16 on a CPU that emulates it (a warning from `pipectl validate` and `pipectl plan`).

The CPU's capabilities come from torch (`torch.cpu.get_capabilities()`, the cpuinfo library)
when torch is already imported, else from the kernel's /proc/cpuinfo flags, which name the same
instructions: `pipectl validate` can then warn without importing torch. Everything is cached.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DtypeName = Literal["auto", "fp32", "bf16", "fp16"]
CONCRETE = ("fp32", "bf16", "fp16")
# CPU features that compute bf16 natively: x86 (/proc/cpuinfo and torch use the same names)
# and Arm's BF16 extension (FEAT_BF16: `bf16` in both)
_NATIVE_BF16 = ("amx_bf16", "avx512_bf16", "bf16")
# the measured cost of emulated bf16 (PERF-NOTES.md, Zen 3, [64,576] @ [576,1536], one thread)
EMULATED_BF16_SLOWDOWN = "about 8x slower than fp32 (11.8 ms vs 1.44 ms for a 64x576x1536 matmul)"


@dataclass(frozen=True)
class CpuInfo:
    """What decides the CPU's dtype: its vector ISA as ATen names it (AVX512, AVX2, NEON...) and
    the feature that computes bf16 natively (empty when none does)."""

    isa: str
    bf16_feature: str = ""
    source: str = "torch"  # torch | /proc/cpuinfo

    @property
    def native_bf16(self) -> bool:
        return bool(self.bf16_feature)

    def describe(self) -> str:
        """e.g. 'AVX512 with native bf16 (avx512_bf16)' or 'AVX2, no native bf16'."""
        if self.native_bf16:
            return f"{self.isa} with native bf16 ({self.bf16_feature})"
        return f"{self.isa}, no native bf16"


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and why: `dtype` is fp32, bf16 or fp16; `reason` is one line for
    `pipectl plan`, e.g. 'cpu: AVX2, no native bf16 → fp32'."""

    dtype: str
    reason: str


def cpu_info_from_flags(flags: Iterable[str], arch: str = "x86_64") -> CpuInfo:
    """CpuInfo from feature names (/proc/cpuinfo `flags` or `Features`, or torch's capability
    keys with true values). The ISA follows ATen's dispatch: AVX512 needs avx512 f/bw/vl/dq,
    AVX2 needs avx2 and fma."""
    have = {f.lower() for f in flags}
    if arch in ("aarch64", "arm64"):
        isa = "SVE" if "sve" in have else "NEON"
    elif {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= have or {
        "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"
    } <= have:  # fmt: skip
        isa = "AVX512"
    elif "avx2" in have and ({"fma", "fma3"} & have):
        isa = "AVX2"
    else:
        isa = "DEFAULT"
    feature = next((f for f in _NATIVE_BF16 if f in have), "")
    if feature == "bf16" and arch not in ("aarch64", "arm64"):
        feature = ""  # x86 has no plain `bf16` flag; only the two above compute it
    return CpuInfo(isa, feature)


def _from_torch() -> CpuInfo:
    import torch

    caps: Mapping = torch.cpu.get_capabilities()
    info = cpu_info_from_flags((k for k, v in caps.items() if v is True), caps["architecture"])
    isa = torch.backends.cpu.get_cpu_capability()  # what ATen dispatches to, after env overrides
    return CpuInfo(isa, info.bf16_feature, "torch")


def _from_proc() -> CpuInfo | None:
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            info = cpu_info_from_flags(value.split(), platform.machine())
            return dataclasses.replace(info, source="/proc/cpuinfo")
    return None


@functools.cache
def cpu_info(import_torch: bool = True) -> CpuInfo | None:
    """This machine's CpuInfo: torch's report when torch is imported (or `import_torch` allows
    importing it), else /proc/cpuinfo; None when neither is available."""
    if "torch" in sys.modules:
        return _from_torch()
    found = _from_proc()
    if found is not None or not import_torch:
        return found
    return _from_torch()


@functools.cache
def _cuda_capability(device: str) -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return None
    return tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]


def resolve_dtype(
    requested: str,
    device: str,
    *,
    supported: tuple[str, ...] = CONCRETE,
    why_limited: str = "",
    cpu: CpuInfo | None = None,
    cuda_capability: tuple[int, int] | None = None,
) -> DtypeChoice:
    """The dtype an instance on `device` ('cpu' or 'cuda:N') computes in for the `requested`
    param (auto, fp32, bf16, fp16). `supported` narrows what the runtime can do (onnxruntime:
    fp32 only, named by `why_limited`); `cpu` and `cuda_capability` stand in for this machine's
    (tests). Raises ValueError for an explicit dtype outside `supported`."""
    if requested != "auto":
        if requested not in supported:
            raise ValueError(f"dtype {requested} unsupported here; {why_limited or supported}")
        return DtypeChoice(requested, f"{device}: {requested} as set")
    if supported == ("fp32",):
        return DtypeChoice("fp32", f"{device}: {why_limited or 'fp32 only'} → fp32")
    if device.startswith("cuda"):
        cap = cuda_capability or _cuda_capability(device)
        if cap is None:
            return DtypeChoice("fp16", f"{device}: not visible to torch here → fp16")
        if cap >= (8, 0) and "bf16" in supported:
            return DtypeChoice("bf16", f"{device}: sm_{cap[0]}{cap[1]}, native bf16 → bf16")
        return DtypeChoice("fp16", f"{device}: sm_{cap[0]}{cap[1]}, no native bf16 → fp16")
    info = cpu or cpu_info()
    if info is None:
        return DtypeChoice("fp32", "cpu: capabilities unknown → fp32")
    dtype = "bf16" if info.native_bf16 and "bf16" in supported else "fp32"
    return DtypeChoice(dtype, f"cpu: {info.describe()} → {dtype}")


def bf16_slowdown(requested: str, device: str, cpu: CpuInfo | None = None) -> str | None:
    """A warning when `requested` is an explicit bf16 for the CPU (device 'cpu' or 'auto') and
    this CPU emulates bf16; None otherwise, or when the CPU is unknown. Never imports torch."""
    if requested != "bf16" or device not in ("cpu", "auto"):
        return None
    info = cpu or cpu_info(import_torch=False)
    if info is None or info.native_bf16:
        return None
    where = "on the CPU" if device == "cpu" else "if placed on the CPU"
    return (
        f"dtype bf16 {where} ({info.describe()}) is emulated: {EMULATED_BF16_SLOWDOWN}; "
        "use dtype: auto (fp32 here, bf16 where the device computes it)"
    )


def torch_dtype(name: str):
    """The torch dtype of a resolved dtype name (fp32, bf16, fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
