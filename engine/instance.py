"""Instance workers: where one placed instance of a node lives and computes.

A runner (`engine/batcher.py`, `engine/streamer.py`) keeps the queue policy in the front process
and dispatches to its node's instances through this small interface:

    instance.load()                 # construct the kind and load it on its device (once)
    instance.run_batch(items)       # a whole batch: one output dict per item, in order
    instance.stream(item)           # streaming kinds: an async iterator of deltas
    instance.statistics()           # the node's own gauges (e.g. the LLM engine's), or None
    instance.close()

`LocalInstance`, the default, holds the node in this process; the runner calls it from the
instance's own thread (torch, onnxruntime and faiss release the GIL). `RayInstance`
(engine/backends/ray_instance.py, `backend: ray`) holds it in a Ray actor; it also offers
`ready` / `wait_ready()` (False while Ray restarts a dead actor), `state()` and, from `run_batch`,
`ItemFailure` in place of the outputs of an item that failed alone. `instances_for` is the one
place that chooses the kind of worker for a node's placement.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from engine.plan import InstancePlan, NodePlan
from nodes.base import Item, Node
from nodes.registry import get_kind


class Instance(Protocol):
    """One placed instance of a node: it holds one loaded node, takes whole batches and streams
    one item at a time. Errors of `run_batch` and `stream` are the node's own."""

    device: str

    def load(self) -> None: ...

    def run_batch(self, items: list[Item]) -> list[Item]: ...

    def stream(self, item: Item) -> AsyncIterator[Item]: ...

    def statistics(self) -> dict | None: ...

    def close(self) -> None: ...


class LocalInstance:
    """An instance in this process: the node object itself, loaded by the calling thread."""

    def __init__(self, node: NodePlan, instance: InstancePlan, base_dir: str | Path | None):
        self.node_plan = node
        self.device = instance.device
        self._base_dir = base_dir
        self.node: Node | None = None

    def load(self) -> None:
        node = get_kind(self.node_plan.kind)(self.node_plan.params, self._base_dir)
        node.load(self.device)
        self.node = node

    def run_batch(self, items: list[Item]) -> list[Item]:
        return self.node.run_batch(items)  # type: ignore[union-attr]

    def stream(self, item: Item) -> AsyncIterator[Item]:
        return self.node.stream(item)  # type: ignore[union-attr]

    def statistics(self) -> dict | None:
        report = getattr(self.node, "statistics", None)
        return report() if callable(report) else None

    def close(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.close()


def instances_for(node: NodePlan, base_dir: str | Path | None) -> list[Instance]:
    """One worker per placed instance of `node`: local (the default), or a Ray actor each
    (`backend: ray`, engine/backends/ray_instance.py; Ray is imported when one loads)."""
    if node.backend.is_ray:
        from engine.backends.ray_instance import RayInstance

        return [RayInstance(node, placed, base_dir, i) for i, placed in enumerate(node.instances)]
    return [LocalInstance(node, placed, base_dir) for placed in node.instances]


_loads: Counter[str] = Counter()
_loads_lock = threading.Lock()


def count_load(kind: str) -> None:
    """One instance of `kind` loaded by a batcher's worker (a reload after a loss not counted)."""
    with _loads_lock:
        _loads[kind] += 1


def instance_loads() -> dict[str, int]:
    """Instances of batched kinds loaded in this process so far, by kind: a node that several
    pipelines share (engine/shared_runners.py) counts once. `/metrics`:
    pipectl_instance_loads_total."""
    with _loads_lock:
        return dict(_loads)


def instance_state(instance: Instance) -> dict:
    """Where an instance runs and whether it is up: backend, ready, restarts, device (and, for
    a Ray actor, its Ray node id, host and pid)."""
    state = getattr(instance, "state", None)
    if callable(state):
        return state()
    return {"backend": "local", "ready": True, "restarts": 0, "device": instance.device}


def placement_statistics(instances: list[Instance]) -> dict:
    """`placement` (instance_state of each), `instances_up` (those ready) and `restarts`
    (summed: Ray actors that Ray restarted)."""
    states = [instance_state(i) for i in instances]
    return {
        "placement": states,
        "instances_up": sum(1 for s in states if s["ready"]),
        "restarts": sum(s["restarts"] for s in states),
    }
