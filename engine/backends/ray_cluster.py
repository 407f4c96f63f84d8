"""Joining a Ray cluster, and checking that a plan's Ray nodes fit in it before any actor is made.

connect("auto")          # the cluster `ray start --head` runs on this machine
connect("10.0.0.5:6379") # a head node elsewhere
connect(None)            # $RAY_ADDRESS when set, else a private local Ray without dashboard
check_cluster(plan)      # PlacementError with the numbers when a node's actors cannot fit
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from engine.errors import PlacementError, Unavailable
from engine.plan import NodePlan, Plan

# resources Ray keeps per node beside the ones actors ask for; not shown in messages
_HIDDEN = ("object_store_memory", "node:", "accelerator_type:")


def ray_nodes(plan: Plan) -> list[NodePlan]:
    """The nodes of `plan` whose instances are Ray actors."""
    return [node for node in plan.nodes.values() if node.backend.is_ray]


def connect(address: str | None = None) -> None:
    """Join the cluster at `address` (`auto`, `HOST:PORT`, `ray://HOST:PORT`), or at $RAY_ADDRESS
    when None; with neither, start a private local Ray (no dashboard) that ends with this
    process. Does nothing when this process is already connected. Unavailable when the cluster
    cannot be reached, or when Ray is not installed."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        # A private instance is one node: Ray's switch for single-node platforms keeps every
        # address it registers on 127.0.0.1 (otherwise it takes the default route's interface).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise Unavailable(
            "a node asks for backend: ray, and Ray is not installed: pip install 'pipectl[ray]'"
        ) from None
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's C++ crash handler would catch the server's SIGTERM (drain, then exit) and abort
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        else:
            # "local": always a new instance, never one a `ray start` left on this machine
            ray.init(
                address="local",
                include_dashboard=False,
                logging_level="WARNING",
                _node_ip_address="127.0.0.1",
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        raise Unavailable(f"cannot start or join a Ray cluster {where}: {exc}") from exc


def check_cluster(plan: Plan) -> None:
    """Check the plan's Ray nodes against the connected cluster's resources (PlacementError)."""
    import ray

    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    check_resources(ray_nodes(plan), ray.cluster_resources(), alive, plan.file)


def check_resources(
    nodes: Iterable[NodePlan], total: dict[str, float], machines: list[dict[str, float]], file=""
) -> None:
    """Every instance must fit on one Ray node, and all instances together in the cluster's
    totals (`ray.cluster_resources()`). Ray would otherwise keep the actors pending forever;
    this fails at once, naming the node, the resource, what is asked and what exists."""
    asked: dict[str, float] = {}
    where = f"{file}: " if file else ""
    for node in nodes:
        each = node.backend.resource_dict()
        count = len(node.instances)
        if not any(_fits(each, machine) for machine in machines):
            short = sorted({k for k, v in each.items() if v > max(_have(m, k) for m in machines)})
            raise PlacementError(
                f"{where}node {node.name!r} (backend ray) asks for {_fmt(each)} per instance, and "
                f"no Ray node has that much {', '.join(short)}; Ray nodes: "
                + "; ".join(_fmt(_visible(m)) for m in machines)
            )
        for key, value in each.items():
            asked[key] = asked.get(key, 0.0) + value * count
            if asked[key] > total.get(key, 0.0) + 1e-9:
                raise PlacementError(
                    f"{where}node {node.name!r} (backend ray, {count} instances of {_fmt(each)}): "
                    f"the pipeline's Ray nodes need {key} {asked[key]:g} in all and the cluster "
                    f"has {total.get(key, 0.0):g} (cluster: {_fmt(_visible(total))})"
                )


def _fits(each: dict[str, float], machine: dict[str, float]) -> bool:
    return all(_have(machine, k) + 1e-9 >= v for k, v in each.items())


def _have(machine: dict[str, float], key: str) -> float:
    return float(machine.get(key, 0.0))


def _visible(resources: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in resources.items() if not k.startswith(_HIDDEN)}


def _fmt(resources: dict[str, float]) -> str:
    parts = []
    for key, value in sorted(resources.items()):
        text = f"{value / (1 << 30):.2f} GiB" if key == "memory" else f"{value:g}"
        parts.append(f"{key} {text}")
    return "{" + ", ".join(parts) + "}"
