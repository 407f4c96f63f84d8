"""`pipectl validate` in a fresh interpreter, reporting which model libraries it imported: the
check behind "validate starts in well under a second and imports nothing heavy"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "onnxruntime", "transformers", "grpc", "ray")


def validate_in_fresh_process(files: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """Run `pipectl validate FILES` (after `prelude`, Python run first) in a new process from the
    repository root; its stdout ends with `heavy: [...]`, the HEAVY modules it imported."""
    code = (
        f"import sys\n{prelude}"
        "from engine.cli import main\n"
        f"rc = main(['validate', *{files!r}])\n"
        f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
