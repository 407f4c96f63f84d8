"""Registers the small test kinds of static_kinds.py (t_text, t_embed, t_topk) for every test."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DATA = HERE.parent / "data"

runpy.run_path(str(HERE / "static_kinds.py"))


@pytest.fixture
def gate():
    """fns.gated's gate, fresh for the test; opened at teardown so no worker stays held (request
    it after the fixtures that start batchers or executors: it must be torn down first)."""
    import fns

    gate = fns.reset_gate()
    yield gate
    gate.opened.set()


@pytest.fixture
def write_pipeline(tmp_path):
    """Write YAML text to a pipeline file in a temporary folder and return its path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
