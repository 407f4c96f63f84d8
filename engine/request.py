"""One request flowing through the pipeline, driven on its caller's event loop.

It holds the tensors produced so far, launches a node when all its inputs are resolved (present
or absent), skips nodes whose condition is false or whose required input is absent, releases
tensors after their last consumer, and ends with a Result, a final StreamEvent, or an error.
A request knows its Dataflow and the runners of its nodes (engine/runner.py), not the executor:
it hands each node's item to that node's runner and hears back through `node_done` / `fail`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.coercion import coerce_input, default_value
from engine.dataflow import Dataflow
from engine.errors import DeadlineExceeded, InvalidInput, NodeError, RequestError, Unavailable
from engine.options import RequestOptions
from engine.result import NodeTrace, Result, StreamEvent
from engine.runner import Runner, Ticket, WorkItem
from nodes.base import Item

if TYPE_CHECKING:
    from engine.node_cache import NodeCache

ABSENT: Any = object()


class Launches:
    """Items bound for runners, gathered while handling one batch so that each runner is fed
    once (one lock, one wake-up) per handoff rather than once per item."""

    __slots__ = ("by_runner",)

    def __init__(self) -> None:
        self.by_runner: dict[Runner, list[WorkItem]] = {}

    def add(self, runner: Runner, item: WorkItem) -> None:
        items = self.by_runner.get(runner)
        if items is None:
            self.by_runner[runner] = [item]
        else:
            items.append(item)

    def flush(self) -> None:
        """Hand the items over; fail those a runner refuses."""
        for runner, items in self.by_runner.items():
            try:
                rejected = runner.put(items)
            except Unavailable as exc:
                for item in items:
                    error = Unavailable(str(exc), node=exc.node, request_id=item.request_id)
                    item.ticket.fail(error)
                continue
            for item in rejected:
                item.ticket.fail(runner.queue_full_error(item))
        self.by_runner.clear()


class RequestRun(Ticket):
    """The state of one request; every method runs on `loop`. `runners` maps each node of the
    dataflow to its runner; `options` is how the client asked for it (engine/options.py)."""

    __slots__ = (
        "active",
        "cache_keys",
        "caches",
        "compute_ns",
        "dataflow",
        "deadline_ns",
        "events",
        "finished",
        "future",
        "launched",
        "options",
        "pending",
        "priority",
        "queue_ns",
        "refcounts",
        "remaining",
        "request_id",
        "runners",
        "timeout_s",
        "timer",
        "trace",
        "tracing",
        "values",
    )

    def __init__(
        self,
        dataflow: Dataflow,
        runners: Mapping[str, Runner],
        loop: asyncio.AbstractEventLoop,
        options: RequestOptions,
        streaming: bool,
        request_id: str = "",
        caches: Mapping[str, NodeCache] | None = None,
    ):
        super().__init__(loop)
        self.dataflow = dataflow
        self.runners = runners
        self.caches = caches or None  # node -> its response cache (engine/node_cache.py)
        self.cache_keys: dict[str, bytes] | None = None  # node -> key of a miss it computes
        self.options = options
        self.request_id = request_id or options.request_id  # the executor numbers unnamed ones
        self.priority = options.priority
        timeout_s = self.timeout_s = options.timeout_s
        self.deadline_ns = time.monotonic_ns() + int(timeout_s * 1e9) if timeout_s else 0
        tracing = self.tracing = options.trace
        self.trace: list[NodeTrace] = []
        self.queue_ns = self.compute_ns = 0  # summed over this request's nodes
        self.launched: dict[str, int] | None = {} if tracing else None  # node: monotonic ns
        self.values: dict[str, np.ndarray] = {}
        self.pending = dict(dataflow.pending)
        self.refcounts = dict(dataflow.refcounts)
        self.remaining = len(dataflow.steps)
        self.active: set[str] = set()
        self.finished = False
        self.future: asyncio.Future | None = None if streaming else loop.create_future()
        self.events: asyncio.Queue | None = asyncio.Queue() if streaming else None
        self.timer: asyncio.TimerHandle | None = None
        if timeout_s:
            self.timer = loop.call_later(timeout_s, self.expire)

    # ---- dataflow --------------------------------------------------------------------------
    def begin(self, inputs: dict[str, Any]) -> None:
        """Check the inputs against the pipeline's types and launch the first nodes."""
        dataflow = self.dataflow
        unknown = [name for name in inputs if name not in dataflow.pipeline_inputs]
        if unknown:
            raise InvalidInput.unknown_input(unknown[0], dataflow.pipeline_inputs)
        ready: list[str] = list(dataflow.roots)
        for name, spec in dataflow.inputs.items():
            value = inputs.get(name)
            if value is None:
                if not spec.optional:
                    known = ", ".join(dataflow.inputs)
                    raise InvalidInput(f"missing input {name!r}; this request needs: {known}")
                default = default_value(spec)
                self._resolve(f"$inputs.{name}", ABSENT if default is None else default, ready)
            else:
                self._resolve(f"$inputs.{name}", coerce_input(name, spec, value), ready)
        launches = Launches()
        self._launch(ready, launches)
        launches.flush()
        if self.remaining == 0:
            self._finish()

    def _resolve(self, key: str, value: Any, ready: list[str]) -> None:
        if value is not ABSENT:
            self.values[key] = value
        pending = self.pending
        for consumer in self.dataflow.consumers.get(key, ()):
            pending[consumer] -= 1
            if pending[consumer] == 0:
                ready.append(consumer)

    def _launch(self, ready: list[str], launches: Launches) -> None:
        steps = self.dataflow.steps
        values = self.values
        while ready:
            step = steps[ready.pop()]
            item: dict[str, np.ndarray] = {}
            missing = False
            for port, key, spec, default in step.inputs:
                value = values.get(key, ABSENT)
                if value is not ABSENT:
                    item[port] = value
                elif not spec.optional:
                    missing = True
                elif default is not None:
                    item[port] = default
            for key in step.input_keys:
                count = self.refcounts[key] - 1
                self.refcounts[key] = count
                if count == 0:
                    values.pop(key, None)
            if not missing and step.condition is not None:
                taken = self._condition(step.name, step.condition, item)
                if taken is None:
                    return
                missing = not taken
            if self.launched is not None:
                self.launched[step.name] = time.monotonic_ns()
            if missing:
                self._skip(step.name, ready)
            else:
                self.active.add(step.name)
                cached = self.caches is not None and step.name in self.caches
                if cached and self._from_cache(step.name, item):
                    continue
                launches.add(
                    self.runners[step.name],
                    WorkItem(
                        item, self.request_id, self, self.priority, self.deadline_ns, node=step.name
                    ),
                )

    def _from_cache(self, name: str, item: dict[str, np.ndarray]) -> bool:
        """Look node `name`'s item up in its response cache. A hit (True) is delivered on the
        loop's next turn as the node's outputs; a miss remembers its key for `node_done`."""
        cache = self.caches[name]  # type: ignore[index]
        started = time.monotonic_ns()
        key = cache.key(item)
        if key is None:  # not deterministic for this item: passes through uncounted
            return False
        hit = cache.cache.get(key)
        cache.cache.record(hit is not None, time.monotonic_ns() - started)
        if hit is None:
            if self.cache_keys is None:
                self.cache_keys = {}
            self.cache_keys[name] = key
            return False
        self.loop.call_soon(self._cache_hit, name, hit)  # type: ignore[union-attr]
        return True

    def _cache_hit(self, name: str, outputs: dict[str, np.ndarray]) -> None:
        """A node answered from its cache: its streamed ports go out whole, as one delta."""
        if self.finished:
            return
        if self.dataflow.steps[name].forward:
            self.delta(name, outputs)
        launches = Launches()
        self.node_done(name, outputs, 0, 1, 0, launches)
        launches.flush()

    def _condition(self, name: str, condition: Any, item: dict[str, np.ndarray]) -> bool | None:
        """Whether a node's `when:` holds. It does not when it reads an absent optional input;
        one that cannot be evaluated fails the request (None)."""
        if not condition.names <= item.keys():
            return False
        try:
            return bool(condition.evaluate(item))
        except Exception as exc:  # noqa: BLE001 - e.g. a comparison of bad types
            self.fail(
                NodeError(
                    f"condition of node {name!r} failed on request {self.request_id!r}: {exc}",
                    node=name,
                    request_id=self.request_id,
                )
            )
            return None

    def _skip(self, name: str, ready: list[str]) -> None:
        if self.tracing:
            at = self.launched.get(name, 0) if self.launched is not None else 0
            self.trace.append(NodeTrace(name, 0.0, 0, 0.0, skipped=True, start_ns=at))
        for _, key in self.dataflow.steps[name].outputs:
            self._resolve(key, ABSENT, ready)
        self.remaining -= 1

    def node_done(
        self,
        name: str,
        outputs: dict[str, np.ndarray],
        queue_ns: int,
        batch_size: int,
        compute_ns: int,
        launches: Launches,
        instance: int = 0,
    ) -> None:
        """A node finished this request: store what it made and launch what that unblocks."""
        if self.cache_keys is not None and name in self.cache_keys:
            self.caches[name].cache.put(self.cache_keys.pop(name), outputs)  # type: ignore[index]
        self.queue_ns += queue_ns
        self.compute_ns += compute_ns
        if self.tracing:
            self._traced(name, outputs, queue_ns, batch_size, compute_ns, instance)
        self.active.discard(name)
        ready: list[str] = []
        for port, key in self.dataflow.steps[name].outputs:
            value = outputs.get(port, ABSENT)
            self._resolve(key, value, ready)
        self.remaining -= 1
        self._launch(ready, launches)
        if self.remaining == 0 and not self.finished:
            self._finish()

    def _traced(
        self,
        name: str,
        outputs: dict,
        queue_ns: int,
        batch_size: int,
        compute_ns: int,
        instance: int,
    ) -> None:
        """Add a node's NodeTrace; its scalar integer outputs become its attributes."""
        attributes = {
            port: int(value.reshape(-1)[0])
            for port, value in outputs.items()
            if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu"
        }
        start = self.launched.get(name, 0) if self.launched is not None else 0
        self.trace.append(
            NodeTrace(
                name, queue_ns / 1e6, batch_size, compute_ns / 1e6,
                start_ns=start, instance=instance, attributes=attributes or None,
            )
        )  # fmt: skip

    def delta(self, node: str, outputs: Item) -> None:
        """A streaming node's partial outputs: forward those the caller streams."""
        if self.events is None or self.finished:
            return
        out = {o: outputs[p] for p, o in self.dataflow.steps[node].forward if p in outputs}
        if out:
            self.events.put_nowait(StreamEvent(out))

    # ---- endings ---------------------------------------------------------------------------
    def _finish(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        values = self.values
        outputs = {
            name: values[key] for name, key in self.dataflow.outputs.items() if key in values
        }
        result = Result(self.request_id, outputs, self.trace, self.queue_ns, self.compute_ns)
        if self.events is not None:
            final = {}
            for name, value in outputs.items():
                if name in self.dataflow.streamed_outputs:  # its deltas went out already
                    value = (
                        np.full(value.shape, b"", object) if value.dtype == object else value[:0]
                    )
                final[name] = value
            self.events.put_nowait(StreamEvent(final, True, result))
        elif not self.future.done():  # type: ignore[union-attr]
            self.future.set_result(result)  # type: ignore[union-attr]

    def fail(self, error: RequestError) -> None:
        """End the request with `error`; nodes still holding it drop it."""
        if self.finished:
            return
        if not error.request_id:
            error.request_id = self.request_id
        self.cancel()
        if self.events is not None:
            self.events.put_nowait(error)
        elif not self.future.done():  # type: ignore[union-attr]
            self.future.set_exception(error)  # type: ignore[union-attr]

    def cancel(self) -> None:
        """Stop the request (its caller is gone): batchers drop its items, streams are closed."""
        self.finished = True
        self.cancelled = True
        self.values.clear()
        if self.timer is not None:
            self.timer.cancel()
        for abort in self.aborts:
            abort()

    def expire(self) -> None:
        at = ", ".join(sorted(self.active)) or "(none)"
        self.fail(
            DeadlineExceeded(
                f"request {self.request_id!r} passed its deadline of {self.timeout_s:g} s "
                f"(still at node {at})",
                request_id=self.request_id,
            )
        )
