"""Triton's response cache for a pipeline: `response_cache: {max_entries: N, max_bytes: M}`.

The key is a SHA-256 of the model, its version, every input (name, dtype, shape, bytes) and the
requested outputs; the value is the response's outputs, returned as the same bytes. It is
LRU-bounded by entries and by bytes (tensor bytes; BYTES elements by their length). A request is
cached only where its results are deterministic, which the kinds declare
(`Node.is_deterministic`: an encoder, a search, a template, a greedy or seeded LLM, ...); others
pass through uncounted. Hits and misses show in ModelStatistics (cache_hit / cache_miss) and
/metrics.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from engine.plan import Plan


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(v) if isinstance(v, bytes | str) else 8 for v in array.reshape(-1))
    return int(array.nbytes)


def request_key(model: str, version: str, inputs: dict[str, np.ndarray], outputs) -> bytes:
    """SHA-256 of what determines the response."""
    h = hashlib.sha256()
    h.update(f"{model}\0{version}\0{sorted(outputs or [])}\0".encode())
    for name in sorted(inputs):
        array = np.asarray(inputs[name])
        h.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:
            for v in array.reshape(-1):
                data = v if isinstance(v, bytes) else str(v).encode()
                h.update(len(data).to_bytes(8, "little") + data)
        else:
            h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


class ResponseCache:
    """An LRU map from request keys to responses, bounded by entries and bytes; thread-safe."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0
        self.hit_ns = self.miss_ns = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return {n: a.copy() for n, a in entry[0].items()}

    def put(self, key: bytes, outputs: dict[str, np.ndarray]) -> None:
        """Store a copy; evict the least recently used until both bounds hold. A response larger
        than max_bytes alone is not stored."""
        size = sum(_nbytes(a) for a in outputs.values())
        if size > self.max_bytes:
            return
        value = {n: np.array(a, copy=True) for n, a in outputs.items()}
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (value, size)
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def record(self, hit: bool, elapsed_ns: int) -> None:
        if hit:
            self.hits += 1
            self.hit_ns += elapsed_ns
        else:
            self.misses += 1
            self.miss_ns += elapsed_ns


def uncacheable_nodes(plan: Plan, inputs: dict | None = None) -> list[str]:
    """The nodes of `plan` whose results are not deterministic (for a request with `inputs`,
    whose values wired to a node's ports may change that, e.g. an LLM's temperature or seed)."""
    from nodes.registry import get_kind

    out = []
    for name, node in plan.nodes.items():
        overrides = {}
        for port, src in node.inputs.items():
            if src.is_pipeline_input and inputs is not None and src.port in inputs:
                overrides[port] = np.asarray(inputs[src.port]).reshape(-1)
        if not get_kind(node.kind).is_deterministic(node.params, overrides):
            out.append(name)
    return out
