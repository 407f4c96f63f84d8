"""`pipectl validate FILE...`: check pipeline files and print every problem as
`file:line: CODE message (hint)`; exit 1 when any file has an error. Never loads a model.

Also the one way every command reports a pipeline file that does not compile
(`compile_or_report`, `report`), so `plan`, `run`, `serve` and `bench` print it as `validate`
does."""

from __future__ import annotations

import argparse
import json
import sys

from engine.errors import GraphError, Issue, PlacementError, SpecError
from engine.graph import check
from engine.plan import Plan
from engine.spec import load_spec


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check pipeline files and print every problem",
        description="Check pipeline files (schema, graph, kinds, params, conditions) without "
        "loading any model. Prints every problem as file:line: CODE message (hint).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="pipeline YAML files")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--strict", action="store_true", help="treat warnings as errors (exit 1 on any)"
    )
    parser.set_defaults(func=run)


def validate_file(path: str) -> list[Issue]:
    """Every issue of one file: schema problems, or else the graph checks'."""
    try:
        spec = load_spec(path)
    except SpecError as exc:
        return exc.issues
    return check(spec)


def run(args: argparse.Namespace) -> int:
    failed = False
    report = []
    for path in args.files:
        issues = validate_file(path)
        errors = [i for i in issues if i.severity == "error" or args.strict]
        failed |= bool(errors)
        report.append({"file": path, "valid": not errors, "issues": [i.to_dict() for i in issues]})
        if args.output == "text":
            for issue in issues:
                print(issue.format())
            warnings = len(issues) - sum(i.severity == "error" for i in issues)
            status = "ok" if not errors else f"{len(issues) - warnings} error(s)"
            print(f"{path}: {status}, {warnings} warning(s)", file=sys.stderr)
    if args.output == "json":
        print(json.dumps({"valid": not failed, "files": report}, indent=2))
    return 1 if failed else 0


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
