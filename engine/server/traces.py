"""Per-request traces leaving the server: who wants them, and what one holds.

A `RequestTracer` (the live page's `RecentTraces`, the OpenTelemetry exporter in
engine/server/otel.py) says per request whether it wants that request traced; only then does the
executor record per-node timings for it (`submit(trace=True)`), and the tracer gets the
`TracedRequest` when the request ends. With no tracer the request path pays one empty-list check.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from engine.result import Result


@dataclass(slots=True)
class TracedRequest:
    """One client request as the server saw it. Times are `time.monotonic_ns()`. `results`
    holds one Result (with its per-node trace) per batch item; it is empty when the request
    failed, and `error` then says why. `traceparent` is the client's W3C header, if any."""

    model: str
    pipeline: str
    request_id: str
    start_ns: int
    end_ns: int
    results: list[Result] = field(default_factory=list)
    error: str = ""
    status: str = ""  # the RequestError status (INVALID_ARGUMENT, ...) when it failed
    traceparent: str | None = None
    protocol: str = ""  # "http" or "grpc"


class RequestTracer(Protocol):
    def wants(self, pipeline: str, traceparent: str | None) -> bool:
        """Whether to trace this request (called before it starts)."""
        ...

    def finished(self, request: TracedRequest) -> None:
        """The traced request ended (called on the event loop)."""
        ...


class RecentTraces:
    """The last `keep` traced requests per pipeline, for the live page's timeline. It samples
    at most one request per pipeline every `interval_s`, so tracing costs nothing under load."""

    def __init__(self, keep: int = 8, interval_s: float = 0.25):
        self.keep = keep
        self.interval_ns = int(interval_s * 1e9)
        self._last: dict[str, int] = {}
        self._recent: dict[str, deque[TracedRequest]] = {}
        self._lock = threading.Lock()

    def wants(self, pipeline: str, traceparent: str | None) -> bool:
        now = time.monotonic_ns()
        if now - self._last.get(pipeline, 0) < self.interval_ns:
            return False
        self._last[pipeline] = now
        return True

    def finished(self, request: TracedRequest) -> None:
        with self._lock:
            recent = self._recent.get(request.pipeline)
            if recent is None:
                recent = self._recent[request.pipeline] = deque(maxlen=self.keep)
            recent.append(request)

    def of(self, pipeline: str) -> list[dict]:
        """The pipeline's recent requests, newest last, as JSON-ready dicts: per node its start
        (ms after the request began), queue and compute ms, batch size, instance, skipped."""
        with self._lock:
            recent = list(self._recent.get(pipeline, ()))
        return [_request_dict(r) for r in recent]


def _request_dict(request: TracedRequest) -> dict:
    nodes = []
    for item, result in enumerate(request.results):
        for t in result.trace:
            nodes.append(
                {
                    "node": t.node,
                    "item": item,
                    "start_ms": round(max(0, t.start_ns - request.start_ns) / 1e6, 3),
                    "queue_ms": round(t.queue_ms, 3),
                    "compute_ms": round(t.compute_ms, 3),
                    "batch_size": t.batch_size,
                    "instance": t.instance,
                    "skipped": t.skipped,
                    "attributes": t.attributes or {},
                }
            )
    return {
        "model": request.model,
        "request_id": request.request_id,
        "total_ms": round((request.end_ns - request.start_ns) / 1e6, 3),
        "ok": not request.error,
        "error": request.error,
        "age_s": round((time.monotonic_ns() - request.end_ns) / 1e9, 1),
        "nodes": nodes,
    }
