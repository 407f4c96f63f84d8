"""The one face through which the executor reaches every node: a `Runner`.

    runner.start(on_loaded)     # each placed instance constructs and loads its node
    runner.wait_loaded()        # block until loaded; Unavailable names the node that failed
    runner.put(items)           # hand over WorkItems (from the request's event loop); the
                                # refused ones come back, to fail with queue_full_error(item)
    runner.stop(drain=True)     # finish (drain) or reject what is queued; close the instances
    runner.statistics()         # counters for /metrics and ModelStatistics
    runner.recent               # a window of the latest items' times (engine/samples.py)

Two runners exist: `engine/batcher.py` (Triton's dynamic batcher: a queue policy in front of
instances that take whole batches) and `engine/streamer.py` (hands each item to a streaming kind
such as the LLM, which batches continuously inside). Both live in the front process; the node
itself lives in an instance worker (`engine/instance.py`). Both finish the same way: every item
ends as a `Done`, handed to the runner's `on_done` callback (once per batch, from any thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from engine.errors import RequestError
from engine.samples import RecentSamples
from nodes.base import Item


class Ticket:
    """What every item of one request shares: the event loop the request lives on, its
    cancellation flag, and the aborts runners register to stop work already handed out (a
    running stream). `engine.request.RequestRun` is the ticket of a real request."""

    __slots__ = ("aborts", "cancelled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.cancelled = False
        self.loop = loop
        self.aborts: list[Callable[[], None]] = []

    def delta(self, node: str, outputs: Item) -> None:
        """Partial outputs of a streaming node, as they come (on `loop`); ignored here."""

    def fail(self, error: RequestError) -> None:
        """End the request with `error`; here: only stop its other items."""
        self.cancelled = True


@dataclass(slots=True, eq=False)
class WorkItem:
    """One request's inputs for one node. Times are `time.monotonic_ns()`; deadline 0 = none."""

    inputs: Item
    request_id: str
    ticket: Ticket
    priority: int = 0  # 0: the policy's default
    deadline_ns: int = 0
    enqueued_ns: int = 0
    node: str = ""  # the node's name in the request's pipeline (a shared runner serves several)


@dataclass(slots=True, eq=False)
class Done:
    """What became of one item: outputs or an error, with its queue and compute times (ns)."""

    item: WorkItem
    outputs: Item | None
    error: RequestError | None
    queue_ns: int
    compute_ns: int
    batch_size: int
    instance: int = 0  # index of the node instance that computed it


OnDone = Callable[[list[Done]], None]
OnLoaded = Callable[[], None]


class Runner(Protocol):
    """The face of one node to the executor; see the module docstring."""

    name: str
    recent: RecentSamples  # the latest items' times, for the live page

    def start(self, on_loaded: OnLoaded | None = None) -> None: ...

    def wait_loaded(self) -> None: ...

    def put(self, items: list[WorkItem]) -> list[WorkItem]:
        """Take items; returns those refused at once (a full queue), which the caller fails
        with `queue_full_error`. Raises Unavailable once stopping."""
        ...

    def queue_full_error(self, item: WorkItem) -> RequestError: ...

    def stop(self, drain: bool = True) -> None: ...

    def statistics(self) -> dict: ...
