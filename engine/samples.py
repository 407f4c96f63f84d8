"""A bounded window of a node's most recent batches and items, for percentiles and rates at read
time.

The request path only writes, once per batch: `record` stores the batch's end time, compute time
and size, and each successful item's queue time (one list store per item, ~60 ns), inside the
loop and lock the batcher already runs to update its counters, so it adds no lock of its own.
Readers (the live page, `/v2/stats/live`) copy the rings and compute percentiles and requests/s
there, off the request path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

ITEMS = 2048  # queue times kept per node
BATCHES = 1024  # batches kept per node


class _Finished(Protocol):
    error: object
    queue_ns: int


class RecentSamples:
    """The last `items` item queue times and `batches` batches (end time in monotonic ns,
    compute ns, successful items) of one node. One writer at a time (the caller's lock or loop)."""

    __slots__ = ("_at", "_compute", "_first", "_nb", "_ni", "_queue", "_size", "batches", "items")

    def __init__(self, items: int = ITEMS, batches: int = BATCHES):
        self.items, self.batches = items, batches
        self._queue = [0] * items
        self._at = [0] * batches
        self._compute = [0] * batches
        self._size = [0] * batches
        self._first = [0] * batches  # index (over all items ever) of the batch's first item
        self._ni = 0  # items ever recorded
        self._nb = 0  # batches ever recorded

    def record(self, at_ns: int, compute_ns: int, done: Iterable[_Finished]) -> None:
        """One computed batch: `done` holds its items (those with an `error` are left out)."""
        queue, cap, first = self._queue, self.items, self._ni
        i = first
        for d in done:
            if d.error is None:
                queue[i % cap] = d.queue_ns
                i += 1
        self._ni = i
        b = self._nb % self.batches
        self._at[b], self._compute[b], self._size[b], self._first[b] = (
            at_ns,
            compute_ns,
            i - first,
            first,
        )
        self._nb += 1

    def record_one(self, at_ns: int, queue_ns: int, compute_ns: int) -> None:
        """One item computed alone (a streaming node's request)."""
        self._queue[self._ni % self.items] = queue_ns
        b = self._nb % self.batches
        self._at[b], self._compute[b], self._size[b], self._first[b] = (
            at_ns,
            compute_ns,
            1,
            self._ni,
        )
        self._ni += 1
        self._nb += 1

    def window(self, seconds: float = 60.0, rate_s: float = 5.0, now_ns: int | None = None) -> dict:
        """Summary of the batches that ended in the last `seconds` (at most the last `batches`):
        count (items), p50/p90/p99 of their items' queue time and of the batches' compute time
        in ms, mean batch size; and `rps`, items per second over the last `rate_s` seconds (over
        the span the ring holds, when that is shorter)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        nb, ni = min(self._nb, self.batches), self._ni
        at, compute, size, first = self._at[:], self._compute[:], self._size[:], self._first[:]
        queue = self._queue[:]
        keep = [b for b in range(nb) if at[b] >= now - int(seconds * 1e9) and size[b]]
        count = sum(size[b] for b in keep)
        out: dict = {"count": count, "rps": 0.0}
        if not keep:
            return out | {"queue_ms": None, "compute_ms": None, "mean_batch": None}
        rate_s = min(rate_s, seconds)
        recent = [b for b in keep if at[b] >= now - int(rate_s * 1e9)]
        if recent and nb == self.batches and len(recent) == nb:  # the ring spans < rate_s
            rate_s = max((now - min(at[b] for b in recent)) / 1e9, 1e-3)
        out["rps"] = sum(size[b] for b in recent) / rate_s
        waits = [
            queue[(first[b] + k) % self.items] / 1e6
            for b in keep
            if first[b] >= ni - self.items  # its items are still in the ring
            for k in range(size[b])
        ]
        out["queue_ms"] = percentiles(waits) if waits else None
        out["compute_ms"] = percentiles([compute[b] / 1e6 for b in keep])
        out["mean_batch"] = count / len(keep)
        return out


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles {"p50": ..., "p90": ..., "p99": ...} of `values` (not empty)."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return {f"p{p}": ordered[min(last, max(0, -(-p * len(ordered) // 100) - 1))] for p in points}
