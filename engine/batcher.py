"""One batcher per node: Triton's dynamic batcher in front of that node's instance workers.

A `Runner` (engine/runner.py). Items wait in one queue per priority level (1 served first). Each
instance worker (engine/instance.py) has a dispatch thread here that takes a batch when the queue
holds `max_batch_size` items, when a preferred batch size can be formed, or when the oldest item
has waited `max_queue_delay_ms` (all in `_wait_for_batch`), and hands it whole to its instance.
Items of cancelled requests are dropped and expired ones rejected before compute; the rest are
computed with failure isolation (engine/batch_compute.py) and counted (engine/batch_statistics.py).
An instance that is down (Unavailable: its actor died) takes no batch until it is back. Results go back
through `on_done`, called once per batch in the dispatch thread (the executor turns that into one
event-loop handoff per batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from engine.batch_compute import compute_batch, failed
from engine.batch_statistics import BatcherStatistics
from engine.errors import DeadlineExceeded, QueueFull, Unavailable
from engine.instance import Instance, count_load, instances_for
from engine.instance_health import InstanceHealth
from engine.plan import BatchPolicy, NodePlan
from engine.queue_timer import QueueTimer
from engine.runner import Done, OnDone, OnLoaded, Ticket, WorkItem

__all__ = ["Batcher", "Done", "Ticket", "WorkItem"]
log = logging.getLogger("pipectl.batcher")
_RECHECK_NS = 20_000_000  # a request past its deadline not yet cancelled: look again then


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
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._timer = QueueTimer(self.name, lock, self._expire_due)
        self._timeout_ns = int(self.policy.timeout_ms * 1e6)
        self._stopping = False
        self._health = InstanceHealth(self.name, self._instances)  # up, restarts, threads
        self._threads = self._health.threads
        self._up = self._health.up  # instance workers serving now
        self._in_hand: dict[int, list[WorkItem]] = {}  # the batch each instance computes
        self._loaded_once = False
        self._loaded = threading.Semaphore(0)
        self._waiting = threading.Lock()
        self._waited = False
        self._load_errors: list[BaseException] = []
        self._stats = BatcherStatistics()
        self.recent = self._stats.recent  # read by the live page

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, on_loaded: OnLoaded | None = None) -> None:
        """Start one dispatch thread per instance worker; each first loads its instance."""
        for index, instance in enumerate(self._instances):
            self._health.thread(self._worker, instance, on_loaded, index, index=index)

    def wait_loaded(self) -> None:
        """Block until every worker has loaded its node; raise Unavailable if one failed. Every
        user of a shared batcher (engine/shared_runners.py) may call it."""
        with self._waiting:
            if not self._waited:
                for _ in self._threads:
                    self._loaded.acquire()
                self._waited = True
        if self._load_errors:
            raise Unavailable.load_failed(self.name, self.node_plan.kind, self._load_errors[0])
        self._loaded_once = True

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
            self._on_done([failed(it, Unavailable.stopping(self.name)) for it in dropped])
        self._timer.stop()
        for thread in list(self._threads):
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
            if not any(self._up) and self._threads and self._loaded_once:
                raise Unavailable(
                    f"node {self.name!r} has no live instance (restarting)", node=self.name
                )
            for item in items:
                if limit and self._size >= limit:
                    rejected.append(item)
                    continue
                item.enqueued_ns = now
                level = min(max(item.priority or default, 1), self._levels)
                self._queues[level - 1].append(item)
                self._size += 1
                due = self._due_ns(item)
                if due:
                    self._timer.note(due)
            if self._idle or self._size >= self._wake_size:
                self._cond.notify()
        if rejected:
            self._stats.count(rejected=len(rejected))
        return rejected

    def queue_full_error(self, item: WorkItem) -> QueueFull:
        """The error of an item `put` refused."""
        return QueueFull.at_node(
            item.node or self.name, self.policy.max_queue_size, item.request_id
        )

    def queued(self) -> int:
        return self._size

    def _due_ns(self, item: WorkItem) -> int:
        """When a queued item must be rejected: its request's deadline or the node's
        timeout_ms after it was queued, whichever is first (0: never)."""
        due = item.enqueued_ns + self._timeout_ns if self._timeout_ns else 0
        if item.deadline_ns and (not due or item.deadline_ns < due):
            due = item.deadline_ns
        return due

    def _expired_error(self, item: WorkItem, now: int) -> DeadlineExceeded | None:
        """The error of an item past its deadline or the node's timeout_ms (None: not due)."""
        name = item.node or self.name
        if item.deadline_ns and now >= item.deadline_ns:
            error = f"request {item.request_id!r} passed its deadline before node {name!r}"
            return DeadlineExceeded(error, node=name)
        if self._timeout_ns and now - item.enqueued_ns >= self._timeout_ns:
            waited_ms = (now - item.enqueued_ns) / 1e6
            error = (
                f"request {item.request_id!r} waited {waited_ms:.1f} ms in the queue of node "
                f"{name!r} (timeout_ms={self.policy.timeout_ms:g})"
            )
            return DeadlineExceeded(error, node=name)
        return None

    def _expire_due(self, now: int) -> None:
        """The queue timer's call: fail every queued item past the node's timeout_ms, and take
        out the items of cancelled requests (a request past its own deadline is cancelled by
        its own timer, RequestRun.expire; until then its item stays and is looked at again)."""
        done: list[Done] = []
        cancelled = 0
        with self._cond:
            for queue in self._queues:
                keep: deque[WorkItem] = deque()
                for item in queue:
                    if item.ticket.cancelled:
                        cancelled += 1
                    elif self._timeout_ns and now - item.enqueued_ns >= self._timeout_ns:
                        error = self._expired_error(item, now)
                        done.append(failed(item, error, now - item.enqueued_ns))  # type: ignore[arg-type]
                    else:
                        if item.deadline_ns and now >= item.deadline_ns:
                            self._timer.note(now + _RECHECK_NS)
                        keep.append(item)
                queue.clear()
                queue.extend(keep)
            self._size = sum(len(q) for q in self._queues)
        if done or cancelled:
            self._stats.record(done, cancelled, 0, 0)
        if done:
            self._on_done(done)

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
    def _worker(
        self, instance: Instance, on_loaded: OnLoaded | None, index: int = 0, restart: bool = False
    ) -> None:
        """Load the instance, then serve batches until stopped. Anything that escapes (only
        KeyboardInterrupt does: compute_batch contains the rest) loses the thread: its batch fails
        naming the node, and a new thread reloads the instance (see `_lost`)."""
        if restart:
            if not self._health.reload(index):
                return
        elif not self._first_load(instance, on_loaded, index):
            return
        lost: BaseException | None = None
        try:
            while self._instance_up(instance) and (batch := self._wait_for_batch()) is not None:
                self._in_hand[index] = batch
                done = self._run(instance, batch, index)
                self._in_hand.pop(index, None)
                del batch  # an idle worker must not keep its last batch's tensors alive
                if done:
                    self._on_done(done)
                del done
        except BaseException as exc:  # noqa: BLE001 - the thread is lost: restarted below
            lost = exc
        finally:
            self._up[index] = False
            try:
                instance.close()
            except Exception:  # a broken instance may not close cleanly
                log.exception("node %r instance %d did not close", self.name, index)
        if lost is not None and not self._stopping:
            self._lost(instance, index, lost)

    def _first_load(self, instance: Instance, on_loaded: OnLoaded | None, index: int) -> bool:
        try:
            instance.load()
        except BaseException as exc:  # noqa: BLE001 - reported by wait_loaded()
            self._load_errors.append(exc)
            self._loaded.release()
            return False
        self._up[index] = True
        count_load(self.node_plan.kind)
        if on_loaded is not None:
            on_loaded()
        self._loaded.release()
        return True

    def _lost(self, instance: Instance, index: int, exc: BaseException) -> None:
        """An instance's thread died: fail the batch it held (and, with no instance left, the
        queue), then start a new thread that reloads the instance (engine/instance_health.py)."""
        why = self._health.lost(index, exc)
        done = [
            failed(item, self._health.lost_error(index, item.request_id, why, item.node))
            for item in self._in_hand.pop(index, [])
        ]
        if not any(self._up):
            with self._cond:
                queued = [item for queue in self._queues for item in queue]
                for queue in self._queues:
                    queue.clear()
                self._size = 0
            error = f"node {self.name!r} has no live instance (restarting)"
            done += [failed(it, Unavailable(error, node=self.name)) for it in queued]
        self._stats.count(failure=len(done))
        if done:
            self._on_done(done)
        self._health.thread(self._worker, instance, None, index, True, index=index)

    @property
    def healthy(self) -> bool:
        """Every instance is serving (False while one is lost and reloading, or its Ray actor
        is being restarted by Ray)."""
        return self._health.healthy

    def _instance_up(self, instance: Instance) -> bool:
        """Wait while the instance restarts (a Ray actor that died), so that batches go to the
        instances that are up. False once it is gone for good and another instance can serve;
        the last one keeps taking batches (they fail at once: nothing waits forever)."""
        wait_ready = getattr(instance, "wait_ready", None)
        if wait_ready is None or wait_ready():
            return True
        return not any(getattr(i, "ready", True) for i in self._instances if i is not instance)

    def _run(self, instance: Instance, batch: list[WorkItem], index: int = 0) -> list[Done]:
        """Drop cancelled items, reject expired ones, compute the rest with failure isolation."""
        now = time.monotonic_ns()
        live: list[WorkItem] = []
        done: list[Done] = []
        cancelled = 0
        for item in batch:
            if item.ticket.cancelled:
                cancelled += 1
            elif (error := self._expired_error(item, now)) is not None:
                done.append(failed(item, error))
            else:
                live.append(item)
        compute_ns = 0
        if live:
            start = time.monotonic_ns()
            done.extend(compute_batch(self.name, instance, live, start, index))
            compute_ns = time.monotonic_ns() - start
        self._stats.record(done, cancelled, len(live), compute_ns)
        return done

    def statistics(self) -> dict:
        """Counts, queue and compute nanosecond totals, and the batch size histogram."""
        stats = self._stats.snapshot()
        stats["queued"] = self._size
        stats.update(self._health.statistics())  # instances, up, restarts, placement
        return stats
