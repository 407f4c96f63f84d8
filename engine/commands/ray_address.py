"""`--ray-address` for the commands that load pipelines (`serve`, `run`).

Nodes with `backend: ray` join the Ray cluster at this address (`auto`: the cluster started with
`ray start --head` on this machine; `HOST:PORT`: a head node elsewhere). Without it, $RAY_ADDRESS;
without either, a private local Ray starts with the first such node and ends with the command.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        default=os.environ.get("RAY_ADDRESS"),
        help="the Ray cluster that runs nodes with backend: ray (default: $RAY_ADDRESS; "
        "none: a private local Ray)",
    )


def apply(args: argparse.Namespace) -> None:
    """Make the address the one the engine's Ray backend joins (Ray reads $RAY_ADDRESS)."""
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address


def disconnect() -> None:
    """Leave the Ray cluster (and end a private one) if this command joined one."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
