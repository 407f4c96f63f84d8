"""The timer on a batcher's queue: queued items are rejected at their own deadline, whether or
not an instance is free to dequeue them (issue 8: a check at dequeue fired only once a worker
freed up, 1.8 s late behind a 2 s batch).

One thread per batcher, started with the first item that has a deadline (the node's
`timeout_ms`, or the request's). It sleeps until the earliest deadline it knows of and then asks
the batcher to take out every queued item that is due (`expire_due(now_ns)`). Deadlines of items
dequeued meanwhile leave stale entries that cost one spurious wake-up each.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class QueueTimer:
    """Calls `expire_due(now_ns)` (without the lock held) at every deadline it was told of.
    `lock` is the batcher's queue lock; `note` must be called with it held."""

    def __init__(self, name: str, lock: threading.Lock, expire_due: Callable[[int], None]):
        self._name = name
        self._wake = threading.Condition(lock)
        self._expire_due = expire_due
        self._deadlines: list[tuple[int, int]] = []  # (deadline_ns, sequence) min-heap
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def note(self, deadline_ns: int) -> None:
        """A queued item is due at `deadline_ns` (monotonic); call with the lock held."""
        earliest = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (deadline_ns, next(self._seq)))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"pipectl-timer-{self._name}", daemon=True
            )
            self._thread.start()
        elif earliest is None or deadline_ns < earliest:
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    now = time.monotonic_ns()
                    if self._deadlines and self._deadlines[0][0] <= now:
                        break
                    wait = (self._deadlines[0][0] - now) / 1e9 if self._deadlines else None
                    self._wake.wait(wait)
                if self._stopping:
                    return
                now = time.monotonic_ns()
                while self._deadlines and self._deadlines[0][0] <= now:
                    heapq.heappop(self._deadlines)
            self._expire_due(now)
