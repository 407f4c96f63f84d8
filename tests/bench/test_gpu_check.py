"""bench/gpu_check.sh end to end in its CPU dry run: every stage runs and lands in one table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def carry(tmp_path_factory) -> Path:
    """One folder of carried configs and tokenizers for both runs (the first one writes it)."""
    return tmp_path_factory.mktemp("gpu-carry")


def dry_run(tmp_path: Path, carry: Path, **env: str) -> str:
    out = tmp_path / "out"
    environ = {**os.environ, "PYTHON": sys.executable, "CARRY": str(carry), "OUT": str(out),
               **env}  # fmt: skip
    command = ["bash", "bench/gpu_check.sh", "--dry-run"]
    done = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "gpu_check.log").stat().st_size > 0
    return (out / "gpu_check.md").read_text()


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    """(stage, result or measure) -> the row's other cells."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
             if line.startswith("| ") and not line.startswith("| stage ")]  # fmt: skip
    return {(c[0], c[1]): c[2:] for c in cells}


def figure(row: list[str]) -> float:
    return float(re.match(r"[\d,.]+", row[0]).group().replace(",", ""))


def test_dry_run_runs_every_stage_on_the_cpu(tmp_path, carry):
    table = rows(dry_run(tmp_path, carry))
    for stage in ("setup", "models", "pytest", "llm", "encoder", "onnxruntime", "faiss"):
        assert (stage, "ok") in table, (stage, table)
    assert "skipped" in table[("pytest", "ok")][1]  # no GPU here: the gpu tests skip, not fail
    for batch in (1, 8):
        assert figure(table[("llm", f"tokens/s at batch {batch}, fp32, 8 new")]) > 0
        step = table[("llm", f"decode step at batch {batch}")]
        assert figure(step) > 0 and "copy-bandwidth floor" in step[1]
    for batch in (1, 64):
        encoder = table[("torch encoder", f"embeddings/s at batch {batch}")]
        assert figure(encoder) > 0 and encoder[1].startswith("torch on cpu")
        ort = table[("onnxruntime encoder", f"embeddings/s at batch {batch}")]
        assert figure(ort) > 0 and "CPUExecutionProvider" in ort[1]
        faiss = table[("faiss_search", f"queries/s at batch {batch}, 5,000 x 384 flat")]
        assert figure(faiss) > 0 and "on the CPU" in faiss[1]


def test_a_failing_stage_is_reported_and_the_rest_still_run(tmp_path, carry):
    # cuda asked on a machine without one: torch paths fail, the others fall back and say so
    table = rows(dry_run(tmp_path, carry, CHECK_DEVICE="cuda:0"))
    assert any(stage == "llm" and result.startswith("FAILED") for stage, result in table)
    assert any(stage == "encoder" and result.startswith("FAILED") for stage, result in table)
    assert ("faiss", "ok") in table and ("onnxruntime", "ok") in table
    ort = table[("onnxruntime encoder", "embeddings/s at batch 1")]
    assert "CPUExecutionProvider (asked: cuda:0)" in ort[1]
    faiss = table[("faiss_search", "queries/s at batch 1, 5,000 x 384 flat")]
    assert "on the CPU" in faiss[1] and "(asked: cuda:0)" in faiss[1]
