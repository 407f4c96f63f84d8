"""`pipectl`: the command line. Each subcommand lives in engine/commands/<name>.py and exposes
`add_parser(subparsers)`; this file only wires them. Commands import heavy libraries lazily."""

from __future__ import annotations

import argparse
import importlib
import sys

from nodes.openmp import configure_openmp_waiting

configure_openmp_waiting()  # before torch or faiss is imported: nodes/openmp.py

# subcommand modules, in the order `pipectl --help` lists them
COMMANDS = ("validate", "schema", "graph", "plan", "run", "index", "serve", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipectl", description="Compile and serve model pipelines described in YAML."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"engine.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
