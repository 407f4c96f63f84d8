"""One batcher per node: Triton's dynamic batcher in front of that node's instance workers.

A `Runner` (engine/runner.py). Items wait in one queue per priority level (1 served first). Each
instance worker (engine/instance.py) has a dispatch thread here that takes a batch when the queue
holds `max_batch_size` items, when a preferred batch size can be formed, or when the oldest item
has waited `max_queue_delay_ms` (all in `_wait_for_batch`), and hands it whole to its instance.
Items of cancelled requests are dropped and expired ones rejected before compute. A batch that
raises is split in halves and retried so that only the failing item fails. Results go back
through `on_done`, called once per batch in the dispatch thread (the executor turns that into one
event-loop handoff per batch).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from engine.errors import (
    DeadlineExceeded,
    InvalidInput,
    QueueFull,
    RequestError,
    Unavailable,
    node_failure,
)
from engine.instance import Instance, instances_for
from engine.plan import BatchPolicy, NodePlan
from engine.runner import Done, OnDone, OnLoaded, Ticket, WorkItem
from engine.samples import RecentSamples

__all__ = ["Batcher", "Done", "Ticket", "WorkItem"]


class Batcher:
    """The queue of one node in front of its instance workers. `start` loads every instance
    (each in its own thread); `put` enqueues; `stop` drains or rejects what is queued."""

    def __init__(
        self,
        node: NodePlan,
        base_dir: str | Path | None,
        on_done: OnDone,
        instances: list[Instance] | None = None,
    ):
        self.name = node.name
        self.node_plan = node
        self.policy: BatchPolicy = node.batching
        self._instances = instances if instances is not None else instances_for(node, base_dir)
        self._on_done = on_done
        self._levels = max(1, self.policy.priority_levels)
        self._queues: list[deque[WorkItem]] = [deque() for _ in range(self._levels)]
        self._size = 0
        self._idle = 0  # workers waiting on an empty queue
        # a worker waiting out max_queue_delay_ms is only woken once a batch can go: waking it
        # on every put costs a thread switch per item
        preferred = self.policy.preferred_batch_sizes
        self._wake_size = (
            min(self.policy.max_batch_size, *preferred)
            if preferred
            else (self.policy.max_batch_size)
        )
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._loaded = threading.Semaphore(0)
        self._load_errors: list[BaseException] = []
        self._stats_lock = threading.Lock()
        self._stats = {
            "success": 0,
            "failure": 0,
            "cancelled": 0,
            "expired": 0,
            "rejected": 0,
            "invalid": 0,
            "batches": 0,
            "queue_ns": 0,
            "compute_ns": 0,
        }
        self._histogram: dict[int, int] = {}
        self.recent = RecentSamples()  # written under _stats_lock, read by the live page

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, on_loaded: OnLoaded | None = None) -> None:
        """Start one dispatch thread per instance worker; each first loads its instance."""
        for index, instance in enumerate(self._instances):
            thread = threading.Thread(
                target=self._worker,
                args=(instance, on_loaded, index),
                name=f"pipectl-{self.name}-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def wait_loaded(self) -> None:
        """Block until every worker has loaded its node; raise Unavailable if one failed."""
        for _ in self._threads:
            self._loaded.acquire()
        if self._load_errors:
            raise Unavailable.load_failed(self.name, self.node_plan.kind, self._load_errors[0])

    def stop(self, drain: bool = True) -> None:
        """Stop the workers: finish what is queued (drain) or reject it as Unavailable."""
        dropped: list[WorkItem] = []
        with self._cond:
            self._stopping = True
            if not drain:
                for queue in self._queues:
                    dropped.extend(queue)
                    queue.clear()
                self._size = 0
            self._cond.notify_all()
        if dropped:
            self._on_done([self._failed(it, Unavailable.stopping(self.name)) for it in dropped])
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    # ---- queueing --------------------------------------------------------------------------
    def put(self, items: list[WorkItem]) -> list[WorkItem]:
        """Enqueue items; returns the ones rejected because `max_queue_size` is reached (the
        caller fails them with `queue_full_error`). Raises Unavailable once stopping."""
        now = time.monotonic_ns()
        limit = self.policy.max_queue_size
        default = self.policy.default_priority
        rejected: list[WorkItem] = []
        with self._cond:
            if self._stopping:
                raise Unavailable.stopping(self.name)
            for item in items:
                if limit and self._size >= limit:
                    rejected.append(item)
                    continue
                item.enqueued_ns = now
                level = min(max(item.priority or default, 1), self._levels)
                self._queues[level - 1].append(item)
                self._size += 1
            if self._idle or self._size >= self._wake_size:
                self._cond.notify()
        if rejected:
            with self._stats_lock:
                self._stats["rejected"] += len(rejected)
        return rejected

    def queue_full_error(self, item: WorkItem) -> QueueFull:
        """The error of an item `put` refused."""
        return QueueFull.at_node(self.name, self.policy.max_queue_size, item.request_id)

    def queued(self) -> int:
        return self._size

    def _wait_for_batch(self) -> list[WorkItem] | None:
        """Block until a batch is due and take it (None: stopped and empty). The only place
        that decides timing: full batch now; a preferred size now; otherwise wait until the
        oldest item has waited max_queue_delay_ms, then take what there is."""
        max_size = self.policy.max_batch_size
        delay_ns = int(self.policy.max_queue_delay_ms * 1e6)
        preferred = sorted(self.policy.preferred_batch_sizes, reverse=True)
        with self._cond:
            while True:
                if self._size == 0:
                    if self._stopping:
                        return None
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                    continue
                take = min(self._size, max_size)
                if take < max_size and delay_ns > 0 and not self._stopping:
                    reachable = next((p for p in preferred if p <= take), 0)
                    if reachable:
                        take = reachable
                    else:
                        waited = time.monotonic_ns() - self._oldest_enqueued_ns()
                        if waited < delay_ns:
                            self._cond.wait((delay_ns - waited) / 1e9)
                            continue
                batch = self._take(take)
                if self._size:
                    self._cond.notify()  # another idle instance may take the rest
                return batch

    def _oldest_enqueued_ns(self) -> int:
        return min(q[0].enqueued_ns for q in self._queues if q)

    def _take(self, count: int) -> list[WorkItem]:
        batch: list[WorkItem] = []
        for queue in self._queues:
            while queue and len(batch) < count:
                batch.append(queue.popleft())
            if len(batch) == count:
                break
        self._size -= len(batch)
        return batch

    # ---- workers ---------------------------------------------------------------------------
    def _worker(self, instance: Instance, on_loaded: OnLoaded | None, index: int = 0) -> None:
        try:
            instance.load()
        except BaseException as exc:  # noqa: BLE001 - reported by wait_loaded()
            self._load_errors.append(exc)
            self._loaded.release()
            return
        if on_loaded is not None:
            on_loaded()
        self._loaded.release()
        try:
            while (batch := self._wait_for_batch()) is not None:
                done = self._run(instance, batch, index)
                del batch  # an idle worker must not keep its last batch's tensors alive
                if done:
                    self._on_done(done)
                del done
        finally:
            instance.close()

    def _run(self, instance: Instance, batch: list[WorkItem], index: int = 0) -> list[Done]:
        """Drop cancelled items, reject expired ones, compute the rest with failure isolation."""
        now = time.monotonic_ns()
        timeout_ns = int(self.policy.timeout_ms * 1e6)
        live: list[WorkItem] = []
        done: list[Done] = []
        cancelled = 0
        for item in batch:
            if item.ticket.cancelled:
                cancelled += 1
            elif item.deadline_ns and now >= item.deadline_ns:
                error = f"request {item.request_id!r} passed its deadline before node {self.name!r}"
                done.append(self._failed(item, DeadlineExceeded(error, node=self.name)))
            elif timeout_ns and now - item.enqueued_ns >= timeout_ns:
                waited_ms = (now - item.enqueued_ns) / 1e6
                error = (
                    f"request {item.request_id!r} waited {waited_ms:.1f} ms in the queue of node "
                    f"{self.name!r} (timeout_ms={self.policy.timeout_ms:g})"
                )
                done.append(self._failed(item, DeadlineExceeded(error, node=self.name)))
            else:
                live.append(item)
        compute_ns = 0
        if live:
            start = time.monotonic_ns()
            done.extend(self._compute(instance, live, start, index))
            compute_ns = time.monotonic_ns() - start
        self._record(done, cancelled, len(live), compute_ns)
        return done

    def _compute(
        self, instance: Instance, items: list[WorkItem], dispatched_ns: int, index: int = 0
    ) -> list[Done]:
        start = time.monotonic_ns()
        try:
            outputs = instance.run_batch([item.inputs for item in items])
            if len(outputs) != len(items):
                raise ValueError(
                    f"run_batch returned {len(outputs)} results for {len(items)} items"
                )
        except Exception as exc:  # noqa: BLE001 - a node failure fails only its item
            if len(items) > 1:  # bisect so that only the failing item fails
                half = len(items) // 2
                return self._compute(instance, items[:half], dispatched_ns, index) + self._compute(
                    instance, items[half:], dispatched_ns, index
                )
            item = items[0]
            error = node_failure(self.name, item.request_id, exc)
            return [self._failed(item, error, dispatched_ns - item.enqueued_ns)]
        compute_ns = time.monotonic_ns() - start
        size = len(items)
        return [
            Done(item, out, None, dispatched_ns - item.enqueued_ns, compute_ns, size, index)
            for item, out in zip(items, outputs, strict=True)
        ]

    def _failed(self, item: WorkItem, error: RequestError, queue_ns: int = 0) -> Done:
        if not error.request_id:
            error.request_id = item.request_id
        return Done(item, None, error, queue_ns, 0, 0)

    def _record(self, done: list[Done], cancelled: int, computed: int, compute_ns: int) -> None:
        with self._stats_lock:
            stats = self._stats
            stats["cancelled"] += cancelled
            for d in done:
                if d.error is None:
                    stats["success"] += 1
                elif isinstance(d.error, DeadlineExceeded):
                    stats["expired"] += 1
                elif isinstance(d.error, InvalidInput):  # the request's fault, not the node's
                    stats["invalid"] += 1
                else:
                    stats["failure"] += 1
                stats["queue_ns"] += d.queue_ns
            if computed:
                stats["batches"] += 1
                stats["compute_ns"] += compute_ns
                self._histogram[computed] = self._histogram.get(computed, 0) + 1
                self.recent.record(time.monotonic_ns(), compute_ns, done)

    def statistics(self) -> dict:
        """Counts, queue and compute nanosecond totals, and the batch size histogram."""
        with self._stats_lock:
            stats = dict(self._stats)
            stats["batch_sizes"] = dict(sorted(self._histogram.items()))
        stats["queued"] = self._size
        stats["instances"] = len(self._threads)
        return stats
