"""A batcher's statistics: outcome counts, queue and compute nanosecond totals, the batch size
histogram and the recent window the live page reads (engine/samples.py).

Written from the batcher's dispatch threads and its queue timer, read by `statistics()`; one lock
guards them all.
"""

from __future__ import annotations

import threading
import time

from engine.errors import DeadlineExceeded, InvalidInput
from engine.runner import Done
from engine.samples import RecentSamples


class BatcherStatistics:
    """The counts of one node's batcher (Triton's per-model statistics, by outcome)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {
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
        self.recent = RecentSamples()  # written under the lock, read by the live page

    def count(self, **added: int) -> None:
        """Add to counts by name, e.g. `count(rejected=3)`."""
        with self._lock:
            for key, n in added.items():
                self._counts[key] += n

    def record(self, done: list[Done], cancelled: int, computed: int, compute_ns: int) -> None:
        """Count a dispatch's outcomes; `computed` items ran as one batch in `compute_ns`."""
        with self._lock:
            stats = self._counts
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

    def snapshot(self) -> dict:
        """The counts and the batch size histogram (`batch_sizes`: size -> batches), a copy."""
        with self._lock:
            stats = dict(self._counts)
            stats["batch_sizes"] = dict(sorted(self._histogram.items()))
        return stats
