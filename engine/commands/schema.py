"""`pipectl schema`: print the JSON Schema of pipeline files (for editors and tools)."""

from __future__ import annotations

import argparse
import json

from engine.spec import spec_json_schema


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of pipeline files",
        description="Print the JSON Schema of pipeline files, e.g. for an editor's YAML support.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(spec_json_schema(), indent=2))
    return 0
