"""The runner of a streaming node (the LLM): it hands each item to one of the node's instances,
which batches continuously inside, so there is no queue policy here.

A `Runner` (engine/runner.py), like the Batcher. `put` is called on the request's event loop and
starts one task there per item; instances are taken in turn. Each delta goes to the request as it
comes (`Ticket.delta`); the end goes through `on_done` like a batch of one: the streamed ports
(`NodePlan.stream_outputs`) concatenated, the other outputs from the last delta. Cancelling the
request cancels the task, which closes the node's stream (the LLM then frees its KV blocks).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np

from engine.errors import InvalidInput, QueueFull, Unavailable, node_failure
from engine.instance import Instance, instances_for, placement_statistics
from engine.plan import NodePlan
from engine.runner import Done, OnDone, OnLoaded, WorkItem
from engine.samples import RecentSamples
from nodes.base import Item


class Streamer:
    """The instances of one streaming node and the tasks that drive their streams."""

    def __init__(
        self,
        node: NodePlan,
        base_dir: str | Path | None,
        on_done: OnDone,
        instances: list[Instance] | None = None,
    ):
        self.name = node.name
        self.node_plan = node
        self._instances = instances if instances is not None else instances_for(node, base_dir)
        self._on_done = on_done
        self._ready: list[Instance] = []
        self._turn = itertools.count()
        self._loaders: list[threading.Thread] = []
        self._load_errors: list[BaseException] = []
        self._stopping = False
        self._stats_lock = threading.Lock()
        self._stats = {"success": 0, "failure": 0, "invalid": 0, "compute_ns": 0}
        self.recent = RecentSamples()  # written on the event loop, read by the live page

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, on_loaded: OnLoaded | None = None) -> None:
        """Load every instance, each in its own thread."""
        for instance in self._instances:
            thread = threading.Thread(
                target=self._load,
                args=(instance, on_loaded),
                name=f"pipectl-load-{self.name}",
                daemon=True,
            )
            self._loaders.append(thread)
            thread.start()

    def _load(self, instance: Instance, on_loaded: OnLoaded | None) -> None:
        try:
            instance.load()
        except BaseException as exc:  # noqa: BLE001 - reported by wait_loaded()
            self._load_errors.append(exc)
            return
        self._ready.append(instance)
        if on_loaded is not None:
            on_loaded()

    def wait_loaded(self) -> None:
        """Block until every instance has loaded; raise Unavailable if one failed."""
        for thread in self._loaders:
            thread.join()
        if self._load_errors:
            raise Unavailable.load_failed(self.name, self.node_plan.kind, self._load_errors[0])

    def stop(self, drain: bool = True) -> None:
        """Take no more items and close the instances (their open streams end)."""
        self._stopping = True
        for thread in self._loaders:
            thread.join()
        ready, self._ready = self._ready, []
        for instance in ready:
            instance.close()

    # ---- items -----------------------------------------------------------------------------
    def put(self, items: list[WorkItem]) -> list[WorkItem]:
        """Start streaming each item on its request's loop; nothing is refused (the node
        queues inside)."""
        if self._stopping or not self._ready:
            raise Unavailable.stopping(self.name)
        # instances that are up (a Ray actor being restarted is skipped while others can serve)
        up = [i for i in self._ready if getattr(i, "ready", True)] or self._ready
        for item in items:
            instance = up[next(self._turn) % len(up)]
            index = self._ready.index(instance)
            loop = item.ticket.loop or asyncio.get_running_loop()
            task = loop.create_task(self._drive(instance, item, index))
            item.ticket.aborts.append(task.cancel)
        return []

    def queue_full_error(self, item: WorkItem) -> QueueFull:
        """Never needed: `put` refuses nothing."""
        return QueueFull.at_node(self.name, 0, item.request_id)

    async def _drive(self, instance: Instance, item: WorkItem, index: int) -> None:
        start = time.monotonic_ns()
        parts: dict[str, list[np.ndarray]] = {port: [] for port in self.node_plan.stream_outputs}
        last: Item = {}
        events = instance.stream(item.inputs)
        try:
            async for delta in events:
                for port, chunks in parts.items():
                    if port in delta:
                        chunks.append(delta[port])
                last = delta
                item.ticket.delta(self.name, delta)
        except BaseException as exc:  # SystemExit too: it fails its request only
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
                raise  # a cancelled request (or a real Ctrl-C) is not the node's failure
            # Unavailable: the instance is down (its actor died), not the node's failure
            error = (
                exc
                if isinstance(exc, Unavailable)
                else node_failure(self.name, item.request_id, exc)
            )
            self._count("invalid" if isinstance(error, InvalidInput) else "failure", 0)
            self._on_done([Done(item, None, error, 0, 0, 0)])
            return
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        outputs = dict(last)
        for port, chunks in parts.items():
            if chunks:
                outputs[port] = concat_deltas(chunks)
        end = time.monotonic_ns()
        compute_ns = end - start
        self._count("success", compute_ns)
        self.recent.record_one(end, 0, compute_ns)
        self._on_done([Done(item, outputs, None, 0, compute_ns, 1, index)])

    def _count(self, outcome: str, compute_ns: int) -> None:
        with self._stats_lock:
            self._stats[outcome] += 1
            self._stats["compute_ns"] += compute_ns

    # ---- statistics --------------------------------------------------------------------------
    def statistics(self) -> dict:
        """Success/failure counts and compute ns, `streaming: True`, and the node's own numbers
        (e.g. the LLM engine's gauges) summed over instances, under the node's kind name."""
        with self._stats_lock:
            stats: dict = dict(self._stats, streaming=True)
        merged: dict[str, float] = {}
        reports = [r for r in (i.statistics() for i in list(self._ready)) if r is not None]
        for report in reports:
            for key, value in report.items():
                merged[key] = merged.get(key, 0) + value
        if reports:
            stats[self.node_plan.kind] = merged
        stats.update(placement_statistics(self._instances))
        return stats

    @property
    def healthy(self) -> bool:
        """Every instance is serving (False while Ray restarts an instance's actor)."""
        return all(getattr(i, "ready", True) for i in self._instances)


def concat_deltas(chunks: list[np.ndarray]) -> np.ndarray:
    """Join streamed deltas: BYTES element-wise (bytes concatenated), numbers along axis 0."""
    if chunks[0].dtype == object:
        first = chunks[0]
        flat = [c.reshape(-1) for c in chunks]
        out = np.empty(first.size, dtype=object)
        out[:] = [b"".join(parts) for parts in zip(*flat, strict=True)]
        return out.reshape(first.shape)
    return np.concatenate(chunks, axis=0)
