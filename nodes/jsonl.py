"""Reading JSON Lines files (https://jsonlines.org): one JSON object per line, blank lines
skipped, every problem a ValueError naming `file:line`. The one reader behind corpora
(`nodes/index_builder.py`) and request files (`pipectl run --input-file`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of `path`; ValueError for a line that is
    not JSON or not a JSON object."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")  # noqa: TRY004
            yield number, record
