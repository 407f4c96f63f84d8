"""The dtype a node instance computes in: `dtype: auto` resolves, per placed instance, to the
fastest dtype its device computes natively.

| device | auto resolves to                                                        |
|--------|-------------------------------------------------------------------------|
| cpu    | bf16 where bf16 computes faster than fp32: AMX-BF16, AMD's AVX512-BF16  |
|        | (Zen 4 on: fp32 FMAs at half rate), Arm BF16 (BFMMLA). Else fp32:       |
|        | without bf16 instructions bf16 is emulated (8x slower than fp32 on Zen  |
|        | 3), and Intel's AVX512-BF16 without AMX runs its bf16 dot products no   |
|        | faster than its fp32 FMAs (measured 1.4x slower end to end)             |
| cuda:N | bf16 from compute capability 8.0 (Ampere) on, else fp16                 |

Explicit `fp32`, `bf16` and `fp16` are honoured as given; `bf16_slowdown` names the cost of an
explicit bf16 on a CPU where it is slower (a warning from `pipectl validate` and `pipectl plan`).
Figures: BENCHMARKS.md, "dtype: auto".

The CPU's features come from the kernel's /proc/cpuinfo (the same CPUID bits torch's cpuinfo
reads) so that `pipectl validate` can warn without importing torch; elsewhere from
`torch.cpu.get_capabilities()`. Everything is cached.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nodes.errors import InvalidConfig

DtypeName = Literal["auto", "fp32", "bf16", "fp16"]
CONCRETE = ("fp32", "bf16", "fp16")
_ARM = ("aarch64", "arm64")
# measured costs of bf16 where it is not fast (PERF-NOTES.md; BENCHMARKS.md, "dtype: auto")
EMULATED_BF16_SLOWDOWN = (
    "about 8x slower than fp32 (Zen 3: 11.8 ms vs 1.44 ms for a 64x576x1536 matmul)"
)
NO_AMX_BF16_SLOWDOWN = "slower than fp32 (Intel Xeon: 2x per matmul, 1.4x for the encoder)"


@dataclass(frozen=True)
class CpuInfo:
    """What decides the CPU's dtype: its vector ISA as ATen names it (AVX512, AVX2, NEON...),
    its vendor, and its bf16 instructions (`bf16_feature`, empty when it has none)."""

    isa: str
    bf16_feature: str = ""
    vendor: str = ""  # GenuineIntel, AuthenticAMD, ... ("" when unknown or Arm)
    source: str = "/proc/cpuinfo"  # or torch

    @property
    def fast_bf16(self) -> bool:
        """bf16 computes faster than fp32 here (see the module's table)."""
        if self.bf16_feature in ("amx_bf16", "bf16"):
            return True
        return self.bf16_feature == "avx512_bf16" and self.vendor != "GenuineIntel"

    def describe(self) -> str:
        """e.g. 'AVX2, no native bf16' or 'AVX512 with native bf16 (amx_bf16)'."""
        if not self.bf16_feature:
            return f"{self.isa}, no native bf16"
        if not self.fast_bf16:
            return f"{self.isa} with avx512_bf16 but no AMX (Intel: bf16 no faster than fp32)"
        return f"{self.isa} with native bf16 ({self.bf16_feature})"


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and why: `dtype` is fp32, bf16 or fp16; `reason` is one line for
    `pipectl plan`, e.g. 'cpu: AVX2, no native bf16 → fp32'."""

    dtype: str
    reason: str


def cpu_info_from_flags(flags: Iterable[str], arch: str = "x86_64", vendor: str = "") -> CpuInfo:
    """CpuInfo from feature names (/proc/cpuinfo `flags` or `Features`, or torch's capability
    keys with true values). The ISA follows ATen's dispatch: AVX512 needs avx512 f/bw/vl/dq,
    AVX2 needs avx2 and fma."""
    have = {f.lower() for f in flags}
    if arch in _ARM:
        isa = "SVE" if "sve" in have else "NEON"
        return CpuInfo(isa, "bf16" if "bf16" in have else "", vendor)
    avx512 = ({"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= have
              or {"avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"} <= have)  # fmt: skip
    if avx512:
        isa = "AVX512"
    elif "avx2" in have and ({"fma", "fma3"} & have):
        isa = "AVX2"
    else:
        isa = "DEFAULT"
    feature = next((f for f in ("amx_bf16", "avx512_bf16") if f in have), "")
    return CpuInfo(isa, feature, vendor)


def _from_torch() -> CpuInfo:
    import torch

    caps = torch.cpu.get_capabilities()
    vendor = platform.processor() if platform.system() == "Windows" else ""
    vendor = "GenuineIntel" if "Intel" in (vendor + str(caps.get("cpu_name", ""))) else vendor
    flags = (k for k, v in caps.items() if v is True)
    info = cpu_info_from_flags(flags, str(caps.get("architecture", "")), vendor)
    isa = torch.backends.cpu.get_cpu_capability()  # what ATen dispatches to, after env overrides
    return dataclasses.replace(info, isa=isa, source="torch")


def _from_proc() -> CpuInfo | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags") or fields.get("Features")
    if flags is None:
        return None
    return cpu_info_from_flags(flags.split(), platform.machine(), fields.get("vendor_id", ""))


@functools.cache
def cpu_info(import_torch: bool = True) -> CpuInfo | None:
    """This machine's CpuInfo: from /proc/cpuinfo, else from torch when `import_torch` allows
    importing it; None when neither is available."""
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
            raise InvalidConfig(
                f"dtype {requested} unsupported here; {why_limited or supported}", field="dtype"
            )
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
    dtype = "bf16" if info.fast_bf16 and "bf16" in supported else "fp32"
    return DtypeChoice(dtype, f"cpu: {info.describe()} → {dtype}")


def bf16_slowdown(requested: str, device: str, cpu: CpuInfo | None = None) -> str | None:
    """A warning when `requested` is an explicit bf16 for the CPU (device 'cpu' or 'auto') and
    bf16 is slower than fp32 on this CPU; None otherwise, or when the CPU is unknown. Never
    imports torch."""
    if requested != "bf16" or device not in ("cpu", "auto"):
        return None
    info = cpu or cpu_info(import_torch=False)
    if info is None or info.fast_bf16:
        return None
    where = "on the CPU" if device == "cpu" else "if placed on the CPU"
    cost = EMULATED_BF16_SLOWDOWN if not info.bf16_feature else NO_AMX_BF16_SLOWDOWN
    what = "is emulated" if not info.bf16_feature else "runs"
    return (
        f"dtype bf16 {where} ({info.describe()}) {what}: {cost}; "
        "use dtype: auto (fp32 here, bf16 where the device computes it faster)"
    )


def torch_dtype(name: str):
    """The torch dtype of a resolved dtype name (fp32, bf16, fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
