"""`dtype: auto`: the dtype each device computes natively, on this machine and on CPUs and GPUs
described by their feature flags (the capability probe is replaced, never our resolution)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes import compute_dtype
from nodes.compute_dtype import CpuInfo, bf16_slowdown, cpu_info_from_flags, resolve_dtype
from tests.validate_imports import validate_in_fresh_process

ROOT = Path(__file__).resolve().parents[2]
# /proc/cpuinfo flags of the machines in PERF-NOTES.md (abridged to what matters)
ZEN3 = [
    "fpu",
    "sse",
    "sse2",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "bmi1",
    "bmi2",
    "sha_ni",
]
ZEN4 = ZEN3 + ["avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
SAPPHIRE_RAPIDS = ZEN4 + ["avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"]
SKYLAKE_X = ZEN3 + ["avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"]
GRAVITON3 = ["fp", "asimd", "sve", "sve2", "bf16", "i8mm", "asimddp"]


INTEL, AMD = "GenuineIntel", "AuthenticAMD"


@pytest.mark.parametrize(
    ("flags", "arch", "vendor", "isa", "feature", "fast"),
    [
        (ZEN3, "x86_64", AMD, "AVX2", "", False),
        (SKYLAKE_X, "x86_64", INTEL, "AVX512", "", False),  # AVX-512 without bf16: emulated
        (ZEN4, "x86_64", AMD, "AVX512", "avx512_bf16", True),
        (ZEN4, "x86_64", INTEL, "AVX512", "avx512_bf16", False),  # this machine: AMX hidden
        (SAPPHIRE_RAPIDS, "x86_64", INTEL, "AVX512", "amx_bf16", True),
        (GRAVITON3, "aarch64", "", "SVE", "bf16", True),
        (["sse2", "bf16"], "x86_64", INTEL, "DEFAULT", "", False),  # no such x86 flag
    ],
)
def test_cpu_features_decide_whether_bf16_is_fast(flags, arch, vendor, isa, feature, fast):
    info = cpu_info_from_flags(flags, arch, vendor)
    assert (info.isa, info.bf16_feature, info.fast_bf16) == (isa, feature, fast)


def test_auto_on_a_cpu_is_bf16_only_where_bf16_is_faster_and_says_why():
    zen3 = cpu_info_from_flags(ZEN3, vendor=AMD)
    choice = resolve_dtype("auto", "cpu", cpu=zen3)
    assert (choice.dtype, choice.reason) == ("fp32", "cpu: AVX2, no native bf16 → fp32")
    intel = resolve_dtype("auto", "cpu", cpu=cpu_info_from_flags(ZEN4, vendor=INTEL))
    assert intel.dtype == "fp32" and "avx512_bf16 but no AMX" in intel.reason
    zen4 = resolve_dtype("auto", "cpu", cpu=cpu_info_from_flags(ZEN4, vendor=AMD))
    assert zen4.reason == "cpu: AVX512 with native bf16 (avx512_bf16) → bf16"
    amx = resolve_dtype("auto", "cpu", cpu=cpu_info_from_flags(SAPPHIRE_RAPIDS, vendor=INTEL))
    assert amx == compute_dtype.DtypeChoice(
        "bf16", "cpu: AVX512 with native bf16 (amx_bf16) → bf16"
    )
    # explicit dtypes are honoured, whatever the CPU
    assert resolve_dtype("bf16", "cpu", cpu=zen3).dtype == "bf16"
    assert resolve_dtype("fp32", "cpu", cpu=cpu_info_from_flags(ZEN4, vendor=AMD)).dtype == "fp32"


def test_auto_on_cuda_is_bf16_from_ampere_else_fp16():
    hopper = resolve_dtype("auto", "cuda:0", cuda_capability=(9, 0))
    assert (hopper.dtype, hopper.reason) == ("bf16", "cuda:0: sm_90, native bf16 → bf16")
    turing = resolve_dtype("auto", "cuda:1", cuda_capability=(7, 5))
    assert (turing.dtype, turing.reason) == ("fp16", "cuda:1: sm_75, no native bf16 → fp16")


def test_a_runtime_limited_to_fp32_resolves_auto_to_fp32_and_refuses_others():
    only = {"supported": ("fp32",), "why_limited": "onnxruntime runs fp32"}
    choice = resolve_dtype("auto", "cpu", cpu=cpu_info_from_flags(ZEN4), **only)
    assert (choice.dtype, choice.reason) == ("fp32", "cpu: onnxruntime runs fp32 → fp32")
    with pytest.raises(ValueError, match="onnxruntime runs fp32"):
        resolve_dtype("bf16", "cpu", **only)


def test_this_machine_reads_the_features_torch_reports():
    """/proc/cpuinfo (read by validate, without torch) names the bf16 instructions torch sees."""
    import torch

    from_proc = compute_dtype._from_proc()
    if from_proc is None:
        pytest.skip("no /proc/cpuinfo here")
    caps = torch.cpu.get_capabilities()
    if caps.get("architecture") in ("aarch64", "arm64"):
        expected = "bf16" if caps.get("bf16") else ""
    else:
        expected = next((f for f in ("amx_bf16", "avx512_bf16") if caps.get(f)), "")
    assert from_proc.bf16_feature == expected
    assert compute_dtype._from_torch().bf16_feature == expected
    choice = resolve_dtype("auto", "cpu")
    assert choice.dtype == ("bf16" if from_proc.fast_bf16 else "fp32")
    assert choice.reason == f"cpu: {from_proc.describe()} → {choice.dtype}"


def test_explicit_bf16_where_it_is_slower_is_a_warning_naming_the_slowdown():
    zen3 = cpu_info_from_flags(ZEN3, vendor=AMD)
    warning = bf16_slowdown("bf16", "cpu", cpu=zen3)
    assert warning is not None and "AVX2, no native bf16" in warning and "8x slower" in warning
    assert "if placed on the CPU" in bf16_slowdown("bf16", "auto", cpu=zen3)
    intel = bf16_slowdown("bf16", "cpu", cpu=cpu_info_from_flags(ZEN4, vendor=INTEL))
    assert intel is not None and "no AMX" in intel and "1.4x" in intel
    assert bf16_slowdown("bf16", "cuda:0", cpu=zen3) is None
    assert bf16_slowdown("auto", "cpu", cpu=zen3) is None
    assert bf16_slowdown("bf16", "cpu", cpu=cpu_info_from_flags(ZEN4, vendor=AMD)) is None


ENCODER_PIPELINE = """apiVersion: pipectl/v1
name: embed
inputs: {text: {dtype: BYTES, shape: [1]}}
outputs: {vector: encode.embedding}
nodes:
  encode:
    kind: encoder
    params:
      dtype: DTYPE
    inputs: {text: $inputs.text}
    placement: {device: cpu}
"""


def _pipeline(tmp_path, dtype: str) -> Path:
    path = tmp_path / f"embed-{dtype}.yaml"
    path.write_text(ENCODER_PIPELINE.replace("DTYPE", dtype))
    return path


def test_validate_and_plan_warn_about_explicit_bf16_on_an_emulating_cpu(
    tmp_path, monkeypatch, capsys
):
    from engine.cli import main

    monkeypatch.setattr(compute_dtype, "cpu_info", lambda import_torch=True: _zen3())
    path = _pipeline(tmp_path, "bf16")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:9: W-DTYPE-BF16-SLOW" in out and "8x slower" in out
    assert main(["validate", "--strict", str(path)]) == 1
    capsys.readouterr()
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "W-DTYPE-BF16-SLOW" in out and "dtype encode: cpu: bf16 as set" in out
    assert main(["plan", str(_pipeline(tmp_path, "auto"))]) == 0
    out = capsys.readouterr().out
    assert "dtype encode: cpu: AVX2, no native bf16 → fp32" in out and "W-DTYPE" not in out


def _zen3() -> CpuInfo:
    return cpu_info_from_flags(ZEN3, vendor=AMD)


def test_plan_json_gives_each_instance_its_dtype(tmp_path, capsys):
    from engine.cli import main

    assert main(["plan", "-o", "json", str(_pipeline(tmp_path, "auto"))]) == 0
    import json

    (instance,) = json.loads(capsys.readouterr().out)["nodes"]["encode"]["instances"]
    expected = resolve_dtype("auto", "cpu")
    assert (instance["dtype"], instance["dtype_reason"]) == (expected.dtype, expected.reason)


def test_validate_reads_the_cpu_without_importing_torch(tmp_path):
    proc = validate_in_fresh_process([str(_pipeline(tmp_path, "bf16"))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "heavy: []" in proc.stdout
