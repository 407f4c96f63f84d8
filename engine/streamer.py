"""The runner of a streaming node (the LLM): it hands each item to one of the node's instances,
which batches continuously inside, so there is no queue policy here.

A `Runner` (engine/runner.py), like the Batcher. `put` is called on the request's event loop and
starts one task there per item; instances are taken in turn. Each delta goes to the request as it
comes (`Ticket.delta`); the end goes through `on_done` like a batch of one: the streamed ports
(`NodePlan.stream_outputs`) concatenated, the other outputs from the last delta. Cancelling the
request cancels the task, which closes the node's stream (the LLM then frees its KV blocks).

A stream that raises KeyboardInterrupt or nodes.errors.InstanceLost (the LLM engine's step thread
died) loses its instance: every stream it held fails naming the node, and the instance is reloaded
in a thread by the batcher's machinery (engine/instance_health.py), shown down meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np

from engine.errors import InvalidInput, QueueFull, Unavailable, node_failure
from engine.instance import Instance, instances_for
from engine.instance_health import InstanceHealth, loses_instance
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
        self._health = InstanceHealth(self.name, self._instances)
        self._streams: list[dict[asyncio.Task, WorkItem]] = [{} for _ in self._instances]
        self._lost_items: dict[int, BaseException] = {}  # id(item) → its error, once lost
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
        for index, instance in enumerate(self._instances):
            thread = threading.Thread(
                target=self._load,
                args=(instance, on_loaded, index),
                name=f"pipectl-load-{self.name}",
                daemon=True,
            )
            self._loaders.append(thread)
            thread.start()

    def _load(self, instance: Instance, on_loaded: OnLoaded | None, index: int) -> None:
        try:
            instance.load()
        except BaseException as exc:  # noqa: BLE001 - reported by wait_loaded()
            self._load_errors.append(exc)
            return
        self._health.up[index] = True
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
        for thread in self._loaders + self._health.threads:
            thread.join()
        for index, instance in enumerate(self._instances):
            if self._health.up[index]:
                self._health.up[index] = False
                instance.close()

    # ---- items -----------------------------------------------------------------------------
    def put(self, items: list[WorkItem]) -> list[WorkItem]:
        """Start streaming each item on its request's loop; nothing is refused (the node
        queues inside)."""
        loaded = [i for i, up in enumerate(self._health.up) if up]
        if self._stopping or (not loaded and not self._health.restarts):
            raise Unavailable.stopping(self.name)
        if not loaded:
            raise Unavailable(
                f"node {self.name!r} has no live instance (restarting)", node=self.name
            )
        # instances that are up (a Ray actor being restarted is skipped while others can serve)
        up = [i for i in loaded if self._health.serving(i)] or loaded
        for item in items:
            index = up[next(self._turn) % len(up)]
            loop = item.ticket.loop or asyncio.get_running_loop()
            task = loop.create_task(self._drive(self._instances[index], item, index))
            self._streams[index][task] = item
            task.add_done_callback(self._streams[index].pop)
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
        except asyncio.CancelledError:
            if (lost := self._lost_items.pop(id(item), None)) is None:
                raise  # a cancelled request is not the node's failure
            self._fail(item, lost)  # its instance was lost under it
            return
        except BaseException as exc:  # noqa: BLE001 - SystemExit fails its request only
            if loses_instance(exc):
                exc = self._instance_lost(index, exc, item)
            # Unavailable: the instance is down (its actor died), not the node's failure
            elif not isinstance(exc, Unavailable):
                exc = node_failure(self.name, item.request_id, exc)
            self._fail(item, exc)
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

    def _fail(self, item: WorkItem, error: BaseException) -> None:
        self._count("invalid" if isinstance(error, InvalidInput) else "failure", 0)
        self._on_done([Done(item, None, error, 0, 0, 0)])

    def _instance_lost(self, index: int, exc: BaseException, item: WorkItem) -> BaseException:
        """Instance `index` is lost under `item` (the first of its streams to see it): its other
        streams are failed too, and a thread closes and reloads it. The error of `item`."""
        if not self._health.up[index]:  # another of its streams saw it first
            return self._health.lost_error(index, item.request_id, f"{type(exc).__name__}")
        why = self._health.lost(index, exc)
        for task, other in list(self._streams[index].items()):
            if other is not item and not task.done():
                self._lost_items[id(other)] = self._health.lost_error(index, other.request_id, why)
                task.cancel()
        if not self._stopping:
            self._health.thread(self._health.reload, index, True, index=index)
        return self._health.lost_error(index, item.request_id, why)

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
        up = [i for index, i in enumerate(self._instances) if self._health.up[index]]
        reports = [r for r in (i.statistics() for i in up) if r is not None]
        for report in reports:
            for key, value in report.items():
                merged[key] = merged.get(key, 0) + value
        if reports:
            stats[self.node_plan.kind] = merged
        stats.update(self._health.statistics())  # instances, up, restarts, placement
        return stats

    @property
    def healthy(self) -> bool:
        """Every instance is serving (False while one is lost and reloading, or while Ray
        restarts an instance's actor)."""
        return self._health.healthy


def concat_deltas(chunks: list[np.ndarray]) -> np.ndarray:
    """Join streamed deltas: BYTES element-wise (bytes concatenated), numbers along axis 0."""
    if chunks[0].dtype == object:
        first = chunks[0]
        flat = [c.reshape(-1) for c in chunks]
        out = np.empty(first.size, dtype=object)
        out[:] = [b"".join(parts) for parts in zip(*flat, strict=True)]
        return out.reshape(first.shape)
    return np.concatenate(chunks, axis=0)
