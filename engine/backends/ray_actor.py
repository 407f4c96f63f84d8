"""The code that runs inside a Ray actor: one loaded instance of one node, in its own process.

The serving process keeps the node's queue and batching policy; it hands each batch to a free
actor in one call (`run_batch`), and streaming kinds' items to `stream`, an async generator that
Ray turns into a stream of object refs. Arrays travel through Ray's object store (numpy arrays
are read zero-copy, as read-only views). A failing item is isolated here, by splitting the batch,
so that one batch costs one hop whatever fails; the failure comes back as an `ItemFailure`.
This module imports nothing of the engine: an actor needs only the node kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nodes.base import Item, Node, NodeParams
from nodes.openmp import configure_openmp_waiting, in_passing_thread


@dataclass(frozen=True)
class ItemFailure:
    """One item of a batch that the node could not compute, and the exception it raised (a
    RuntimeError with the same text when that exception cannot be pickled)."""

    error: Exception


class NodeActor:
    """One instance of a node kind: constructed and loaded in the actor's process. Ray restarts
    the process (and so reloads the node) when it dies, up to the actor's max_restarts."""

    def __init__(self, kind: type[Node], params: NodeParams, base_dir: str, device: str):
        configure_openmp_waiting()  # as pipectl's own processes wait: nodes/openmp.py
        self._node = kind(params, Path(base_dir))
        # batches compute on the pool's thread below: a load on this (lasting) thread would keep
        # an OpenMP team here that makes theirs wait asleep (nodes/openmp.py)
        in_passing_thread(self._node.load, device)
        self._device = device
        # batches run one at a time, off the actor's event loop, so that statistics and
        # streams are answered while a batch computes
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pipectl-actor")
        self._closed_event: asyncio.Event | None = None

    async def info(self) -> dict:
        """Where this instance runs: Ray node id, host name, process id and device."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self._device,
        }

    async def run_batch(self, items: list[Item]) -> list[Item | ItemFailure]:
        """Outputs of every item, in order; an item that fails alone becomes an ItemFailure."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, isolate_failures, self._node, items)

    async def stream(self, item: Item) -> AsyncIterator[Item]:
        """The node's deltas for one item. When the caller cancels (ray.cancel on the stream),
        the node's own stream is closed, which aborts the work and frees what it held."""
        async with contextlib.aclosing(self._node.stream(item)) as deltas:
            async for delta in deltas:
                yield delta

    async def statistics(self) -> dict:
        """The node's own statistics (e.g. the LLM engine's KV blocks in use), or {}."""
        own = getattr(self._node, "statistics", None)
        return dict(own()) if callable(own) else {}

    async def lifeline(self) -> None:
        """Returns only once the actor is closed: the serving process keeps one such call
        pending, so that it learns of the actor's death (the call fails) at once."""
        await self._closed().wait()

    async def close(self) -> None:
        """Release what the node loaded and end the lifeline (the actor is killed next)."""
        self._closed().set()
        self._node.close()

    def _closed(self) -> asyncio.Event:
        if self._closed_event is None:  # made on the actor's event loop
            self._closed_event = asyncio.Event()
        return self._closed_event


def isolate_failures(node: Node, items: list[Item]) -> list[Item | ItemFailure]:
    """`node.run_batch(items)`; when it raises, split the batch in halves and retry, so that only
    the items that fail alone fail (an ItemFailure each)."""
    try:
        outputs = node.run_batch(items)
        if len(outputs) != len(items):
            raise ValueError(f"run_batch returned {len(outputs)} results for {len(items)} items")
        return list(outputs)
    except Exception as exc:  # noqa: BLE001 - a node failure fails only its item
        if len(items) == 1:
            return [ItemFailure(_picklable(exc))]
        half = len(items) // 2
        return isolate_failures(node, items[:half]) + isolate_failures(node, items[half:])


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any exception may fail to pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
