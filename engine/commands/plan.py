"""`pipectl plan FILE`: compile a pipeline and print its Plan: order, routing, batching, placement."""

from __future__ import annotations

import argparse
import json
import sys

from engine.commands.validate import compile_or_report
from engine.plan import Plan


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="compile a pipeline and print its plan",
        description="Compile a pipeline against this machine's devices and print, per node in "
        "run order: kind, inputs, batching, instances and their devices, CPU threads, the dtype "
        "each instance computes in (and why), weight format (quantization), memory, backend "
        "(local threads, or Ray actors with their resources), condition.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="also check the nodes with backend: ray against this Ray cluster's resources",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = compile_or_report(args.file)
    if plan is None:
        return 1
    if args.ray_address and not _fits_ray_cluster(plan, args.ray_address):
        return 1
    if args.output == "json":
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        sys.stdout.write(format_plan(plan))
    return 0


def format_plan(plan: Plan) -> str:
    """The plan as a readable table."""
    lines = [f"pipeline {plan.name} ({plan.file})"]
    inputs = ", ".join(f"{n} {s.dtype} {list(s.shape)}" for n, s in plan.inputs.items())
    lines.append(f"inputs:  {inputs or '-'}")
    lines.append("outputs: " + ", ".join(f"{n} <- {src}" for n, src in plan.outputs.items()))
    rows = [
        ("node", "kind", "inputs", "batch", "delay ms", "instances", "threads", "dtype", "weights",
         "memory", "backend", "when")
    ]  # fmt: skip
    reasons: list[str] = []
    for name, node in plan.nodes.items():
        devices: dict[str, int] = {}
        for inst in node.instances:
            devices[inst.device] = devices.get(inst.device, 0) + 1
        memory = sum(i.memory_bytes for i in node.instances)
        dtypes = list(dict.fromkeys(i.dtype for i in node.instances if i.dtype))
        for reason in dict.fromkeys(i.dtype_reason for i in node.instances if i.dtype):
            reasons.append(f"dtype {name}: {reason}")
        rows.append(
            (
                name,
                node.kind,
                _wiring(plan, name, node),
                str(node.batching.max_batch_size),
                f"{node.batching.max_queue_delay_ms:g}",
                ", ".join(f"{d} x{n}" for d, n in devices.items()),
                _threads(node.params),
                ", ".join(dtypes) or "-",
                str(getattr(node.params, "quantization", None) or "-"),
                _size(memory),
                node.backend.describe(),
                node.when or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if reasons:
        lines.append("")
        lines.extend(reasons)
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines) + "\n"


def _wiring(plan: Plan, name: str, node) -> str:
    """A node's inputs; the request parameters wired to implicit pipeline inputs of their name
    (an LLM's max_tokens, temperature...: engine/compiler.py) are counted, not listed."""
    implicit = f"request parameter of node {name}:"
    shown, counted = [], 0
    for port, src in node.inputs.items():
        given = plan.inputs.get(src.port) if src.is_pipeline_input else None
        if src.port == port and given is not None and given.doc.startswith(implicit):
            counted += 1
        else:
            shown.append(f"{port}<-{src}")
    if counted:
        shown.append(f"+{counted} request parameters")
    return ", ".join(shown) or "-"


def _threads(params) -> str:
    """A node's intra-op CPU threads as its params set them: "all" for torch's or OpenMP's
    default (None or 0), "-" for a kind without the param."""
    if not hasattr(params, "threads"):
        return "-"
    return str(params.threads) if params.threads else "all"


def _fits_ray_cluster(plan: Plan, address: str) -> bool:
    """Check the plan's Ray nodes against the cluster at `address`, reporting on stderr."""
    from engine.backends.ray_cluster import check_cluster, connect, ray_nodes
    from engine.errors import PlacementError, Unavailable

    if not ray_nodes(plan):
        return True
    import ray

    joined = not ray.is_initialized()
    try:
        connect(address)
        check_cluster(plan)
    except (PlacementError, Unavailable) as exc:
        print(f"{plan.file}: placement: {exc}", file=sys.stderr)
        return False
    finally:
        if joined:
            ray.shutdown()
    return True


def _size(n: int) -> str:
    if n == 0:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
