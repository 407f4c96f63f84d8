"""Compile a pipeline file for a command, printing every problem the way `validate` does."""

from __future__ import annotations

import sys

from engine.errors import GraphError, PlacementError, SpecError
from engine.plan import Plan


def compile_or_report(path: str) -> Plan | None:
    """The Plan of `path`, or None after printing its problems (file:line: CODE message) to stderr."""
    from engine.compiler import compile_file

    try:
        return compile_file(path)
    except (SpecError, GraphError, PlacementError) as exc:
        report(path, exc)
    return None


def report(path: str, exc: SpecError | GraphError | PlacementError) -> None:
    """Print a compile error the way `validate` does (file:line: CODE message) to stderr."""
    if isinstance(exc, PlacementError):
        print(f"{path}: placement: {exc}", file=sys.stderr)
        return
    for issue in exc.issues:
        print(issue.format(), file=sys.stderr)
