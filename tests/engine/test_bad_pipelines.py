"""The gallery of bad pipelines: each file names, in its first line, the code and line it must
yield (`# expect: CODE line N`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.commands.validate import validate_file

GALLERY = Path(__file__).parent.parent / "data" / "bad_pipelines"
FILES = sorted(GALLERY.glob("*.yaml"))


def expectation(path: Path) -> tuple[str, int]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = re.fullmatch(r"# expect: ([A-Z][A-Z0-9-]+) line (\d+)", first)
    assert m, f"{path.name}: the first line must be '# expect: CODE line N'"
    return m.group(1), int(m.group(2))


def test_the_gallery_is_large_and_covers_errors_and_warnings():
    codes = {expectation(p)[0] for p in FILES}
    assert len(FILES) >= 22
    assert len(codes) >= 20
    assert any(c.startswith("W-") for c in codes)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_pipeline_yields_its_code_at_its_line(path):
    code, line = expectation(path)
    issues = validate_file(str(path))
    found = [(i.code, i.line) for i in issues]
    assert (code, line) in found, f"{path.name}: got {found}"
    assert all(i.file == str(path) for i in issues)
    if code.startswith("W-"):
        assert all(i.severity == "warning" for i in issues)
