"""A bounded window of a node's most recent items, for percentiles and rates at read time.

The request path only writes: `add` is four list stores and an index bump, done where the node's
counters are already updated (under the batcher's existing stats lock, or on the event loop for
streaming nodes), so it adds no lock of its own. Readers (the live page, `/v2/stats/live`) copy
the window and compute percentiles and requests/s there, off the request path.
"""

from __future__ import annotations

import time

CAPACITY = 2048  # items per node: ~16 KiB of ints; enough for a steady p99


class RecentSamples:
    """The last `capacity` items of one node: when each finished (monotonic ns), its queue and
    compute time (ns) and the size of the batch it ran in."""

    __slots__ = ("_at", "_batch", "_compute", "_next", "_queue", "capacity")

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._at = [0] * capacity
        self._queue = [0] * capacity
        self._compute = [0] * capacity
        self._batch = [0] * capacity
        self._next = 0  # items ever added; slot = _next % capacity

    def add(self, at_ns: int, queue_ns: int, compute_ns: int, batch_size: int) -> None:
        """Record one item (called by one writer at a time: the caller's lock or loop)."""
        i = self._next % self.capacity
        self._at[i] = at_ns
        self._queue[i] = queue_ns
        self._compute[i] = compute_ns
        self._batch[i] = batch_size
        self._next += 1

    def window(self, seconds: float = 60.0, rate_s: float = 5.0, now_ns: int | None = None) -> dict:
        """Summary of the items that finished in the last `seconds` (at most `capacity`):
        count, p50/p90/p99 of queue and compute time in ms, mean batch size; and `rps`, items
        per second over the last `rate_s` seconds. The rate divides by the span the kept items
        cover when the ring holds fewer than that span, so it stays right at any load."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        n = min(self._next, self.capacity)
        at, queue, compute, batch = self._at[:], self._queue[:], self._compute[:], self._batch[:]
        since = now - int(seconds * 1e9)
        keep = [i for i in range(n) if at[i] >= since]
        out: dict = {"count": len(keep), "rps": 0.0}
        if not keep:
            return out | {"queue_ms": None, "compute_ms": None, "mean_batch": None}
        rate_s = min(rate_s, seconds)
        recent = [at[i] for i in keep if at[i] >= now - int(rate_s * 1e9)]
        if recent and n == self.capacity and len(recent) == n:  # the ring spans < rate_s
            rate_s = max((now - min(recent)) / 1e9, 1e-3)
        out["rps"] = len(recent) / rate_s
        out["queue_ms"] = percentiles([queue[i] / 1e6 for i in keep])
        out["compute_ms"] = percentiles([compute[i] / 1e6 for i in keep])
        out["mean_batch"] = sum(batch[i] for i in keep) / len(keep)
        return out


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles {"p50": ..., "p90": ..., "p99": ...} of `values` (not empty)."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return {f"p{p}": ordered[min(last, max(0, -(-p * len(ordered) // 100) - 1))] for p in points}
