"""`pipectl graph FILE`: draw a pipeline as text, Mermaid or DOT (conditions shown on nodes)."""

from __future__ import annotations

import argparse
import sys

from engine import drawing
from engine.errors import SpecError
from engine.graph import check
from engine.spec import load_spec

FORMATS = {"text": drawing.to_text, "mermaid": drawing.to_mermaid, "dot": drawing.to_dot}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="draw a pipeline (text, mermaid, dot)",
        description="Draw a pipeline's nodes and edges. A pipeline with graph errors is still "
        "drawn; its errors go to stderr and the exit status is 1.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("-f", "--format", choices=tuple(FORMATS), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.file)
    except SpecError as exc:
        for issue in exc.issues:
            print(issue.format(), file=sys.stderr)
        return 1
    sys.stdout.write(FORMATS[args.format](spec))
    errors = [i for i in check(spec) if i.severity == "error"]
    for issue in errors:
        print(issue.format(), file=sys.stderr)
    return 1 if errors else 0
