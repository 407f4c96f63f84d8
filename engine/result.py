"""What a request gives back: its outputs, its per-node trace, and (when streamed) deltas."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class NodeTrace:
    """One node's part in a request: time queued, the batch it ran in, time computing.
    A node skipped by its condition (or for an absent input) has `skipped` set and no times.
    `start_ns` is when the node took the request (`time.monotonic_ns()`; its queue time starts
    there), `instance` the index of the instance that computed it, and `attributes` the node's
    scalar integer outputs (e.g. the LLM's prompt_tokens, completion_tokens)."""

    node: str
    queue_ms: float
    batch_size: int
    compute_ms: float
    skipped: bool = False
    start_ns: int = 0
    instance: int = 0
    attributes: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "queue_ms": round(self.queue_ms, 3),
            "batch_size": self.batch_size,
            "compute_ms": round(self.compute_ms, 3),
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class Result:
    """The outputs of one request (an output whose node was skipped is missing) and its trace
    (empty unless asked for), in the order the nodes finished. `queue_ns` and `compute_ns`
    (always kept) sum this request's time queued and computing over its nodes, in ns: a
    pipeline's own statistics add these, never its shared nodes' totals."""

    request_id: str
    outputs: dict[str, np.ndarray]
    trace: list[NodeTrace] = field(default_factory=list)
    queue_ns: int = 0
    compute_ns: int = 0


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed request. Non-final events carry deltas of streamed outputs (the
    consumer concatenates them). The final event carries every requested output: the others in
    full, each streamed one as its last (possibly empty) delta; `result` then holds the whole
    Result (streamed outputs concatenated, trace)."""

    outputs: dict[str, np.ndarray]
    final: bool = False
    result: Result | None = None
