"""How a client asked for one request to be run: one frozen value that travels from the faces
(gRPC, HTTP, OpenAI, the CLI) through `Repository` and `Executor` into the request itself.

    options = RequestOptions(request_id="q1", priority=1, timeout_s=0.5)
    await executor.submit(inputs, options=options)
    await executor.submit(inputs, timeout_s=0.5, trace=True)    # the same fields as keywords
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """`request_id`: the client's id ("" → the executor numbers requests). `priority`: Triton's
    priority level, 1 served first (0 → each node's `default_priority`). `timeout_s`: the deadline
    in seconds from submission (None → none), checked while queued and while running. `trace`:
    record a NodeTrace per node in the Result. `traceparent`: the client's W3C trace context
    (https://www.w3.org/TR/trace-context/), handed to the server's tracers."""

    request_id: str = ""
    priority: int = 0
    timeout_s: float | None = None
    trace: bool = False
    traceparent: str | None = None

    @classmethod
    def of(cls, options: RequestOptions | None = None, **fields: Any) -> RequestOptions:
        """`options` (the defaults when None) with `fields` replaced; a None field is not given."""
        base = options if options is not None else _DEFAULT
        if not fields:  # the common case, kept cheap: no dict, no replace()
            return base
        given = {name: value for name, value in fields.items() if value is not None}
        if not given:
            return base
        return cls(**given) if options is None else replace(base, **given)

    def for_item(self, index: int, batch: int) -> RequestOptions:
        """The options of item `index` of a client batch: its id gets `/index` when batch > 1."""
        if batch == 1:
            return self
        return replace(self, request_id=f"{self.request_id}/{index}" if self.request_id else "")


_DEFAULT = RequestOptions()
