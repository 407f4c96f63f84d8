"""One object per key in the process, loaded once and reference-counted: what lets two pipelines
(or two nodes) that ask for the same thing hold one copy of it.

Two pools use it: LLM engines (nodes/llm/shared.py: the `llm` kind and the rerank judge) and the
runners of batched nodes (engine/shared_runners.py: a node's batcher with its loaded instances,
so that its requests from every pipeline batch together).

    pool = SharedPool(close=lambda engine: engine.shutdown())
    engine = pool.acquire(key, lambda: LLMEngine(path, config))   # loads on first use
    pool.release(engine)                                           # the last user closes it
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    users: int = 0
    value: T | None = None
    error: BaseException | None = None
    loaded: threading.Event = field(default_factory=threading.Event)


class SharedPool(Generic[T]):
    """Objects by key, each loaded once and closed by its last user's `release`; thread-safe."""

    def __init__(self, close: Callable[[T], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry[T]] = {}

    def acquire(
        self, key: Hashable, load: Callable[[], T], stale: Callable[[T], bool] | None = None
    ) -> T:
        """The object for `key`, made by `load()` on first use (blocking; concurrent callers for
        the same key wait for one load). Raises what the load raised; a failed load is not kept,
        so the next caller tries again. One that `stale` rejects (an LLM engine whose step loop
        died) is handed out no more: this caller loads a new one, and each of the stale one's
        users closes it on `release`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.value is not None and stale and stale(entry.value):
                entry = None
            first = entry is None
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.users += 1
        if first:
            try:
                entry.value = load()
            except BaseException as exc:
                entry.error = exc
                with self._lock:
                    self._entries.pop(key, None)
                raise
            finally:
                entry.loaded.set()
        entry.loaded.wait()
        if entry.error is not None:
            raise entry.error
        return entry.value  # type: ignore[return-value]

    def release(self, value: T) -> bool:
        """One user less; the last one closes `value` (True then). A value the pool does not
        hold is closed at once."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.value is value:
                    entry.users -= 1
                    if entry.users > 0:
                        return False
                    del self._entries[key]
                    break
        self._close(value)
        return True

    def users(self, value: T) -> int:
        """How many users hold `value` (0 once released, or never pooled)."""
        with self._lock:
            return next((e.users for e in self._entries.values() if e.value is value), 0)

    def loaded(self) -> int:
        """Distinct objects loaded now."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.value is not None)
