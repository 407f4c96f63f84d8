"""The executor: runs a Plan. One Batcher per batched node, streaming nodes driven on the caller's
event loop, and each request a dataflow (engine/request.py) on the loop that submitted it.

    executor = Executor(compile_file("pipelines/search.yaml"))
    executor.start()                                   # loads every instance
    result = await executor.submit({"query": np.array([b"open a file"], dtype=object)})
    result = executor.submit_sync({...})               # from plain threads
    async for event in executor.stream({...}): ...     # deltas of streamed outputs
    executor.stop()

Worker threads hand finished batches to the request's loop once per batch
(`loop.call_soon_threadsafe`), never once per item.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Self

import numpy as np

from engine.batcher import Batcher, Done
from engine.errors import InvalidInput, RequestError, Unavailable, node_failure
from engine.plan import Plan
from engine.request import Launches, RequestRun
from engine.result import Result, StreamEvent
from engine.samples import RecentSamples
from engine.schedule import Schedule
from nodes.base import Item, Node
from nodes.registry import get_kind

Progress = Callable[[str, int, int], None]  # (node, instances loaded so far, instances in all)


class Executor:
    """Runs requests through a compiled Plan; see the module docstring."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.batchers: dict[str, Batcher] = {}
        self._streamers: dict[str, list[Node]] = {}
        self._stream_stats: dict[str, dict[str, int]] = {}
        self._stream_recent: dict[str, RecentSamples] = {}
        self._rr = itertools.count()
        self._schedules: dict[tuple[str, ...] | None, Schedule] = {}
        self._ids = itertools.count(1)
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, progress: Progress | None = None) -> None:
        """Load every instance of every node (each in its own thread) and block until done."""
        total = sum(len(n.instances) for n in self.plan.nodes.values())
        loaded = itertools.count(1)
        lock = threading.Lock()

        def on_loaded(name: str) -> None:
            if progress is not None:
                with lock:
                    progress(name, next(loaded), total)

        loaders: list[threading.Thread] = []
        errors: list[BaseException] = []
        for name, node in self.plan.nodes.items():
            kind = get_kind(node.kind)
            if kind.streaming:
                self._streamers[name] = []
                self._stream_stats[name] = {
                    "success": 0,
                    "failure": 0,
                    "invalid": 0,
                    "compute_ns": 0,
                }
                self._stream_recent[name] = RecentSamples()
                for instance in node.instances:
                    thread = threading.Thread(
                        target=self._load_streamer,
                        args=(kind, node.name, instance.device, errors, on_loaded),
                        name=f"pipectl-load-{name}",
                        daemon=True,
                    )
                    loaders.append(thread)
                    thread.start()
            else:
                batcher = Batcher(node, self.plan.base_dir, partial(self._deliver, name))
                self.batchers[name] = batcher
                batcher.start(partial(on_loaded, name))
        try:
            for batcher in self.batchers.values():
                batcher.wait_loaded()
            for thread in loaders:
                thread.join()
            if errors:
                raise errors[0]
        except BaseException:
            self.stop(drain=False)
            raise
        self._schedules.clear()
        self._schedule(None)  # fail early on a bad condition
        self._started = True

    def view(self, plan: Plan) -> Executor:
        """An executor for `plan`, a sub-plan of this one's (e.g. one node served alone), that
        runs on this executor's loaded instances: the same batchers and streaming nodes, so
        nothing is loaded twice and its requests batch with this executor's."""
        if not self._started:
            raise Unavailable(f"model {plan.name!r}: its pipeline is not loaded")
        missing = [n for n in plan.nodes if n not in self.batchers and n not in self._streamers]
        if missing:
            raise ValueError(f"{plan.name!r} is not a sub-plan: no nodes {', '.join(missing)}")
        view = Executor(plan)
        view.batchers = {n: self.batchers[n] for n in plan.nodes if n in self.batchers}
        view._streamers = self._streamers
        view._stream_stats = self._stream_stats
        view._stream_recent = self._stream_recent
        view._started = True
        return view

    def _load_streamer(self, kind, name: str, device: str, errors: list, on_loaded) -> None:
        try:
            node = kind(self.plan.nodes[name].params, self.plan.base_dir)
            node.load(device)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            errors.append(
                Unavailable(f"node {name!r} failed to load: {type(exc).__name__}: {exc}", node=name)
            )
            return
        self._streamers[name].append(node)
        on_loaded(name)

    def stop(self, drain: bool = True) -> None:
        """Stop the batchers (finishing queued work when `drain`), close streaming nodes and the
        background loop of submit_sync."""
        self._started = False
        for batcher in self.batchers.values():
            batcher.stop(drain=drain)
        for nodes in self._streamers.values():
            for node in nodes:
                node.close()
        self._streamers.clear()
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- requests --------------------------------------------------------------------------
    def _schedule(self, outputs: list[str] | None) -> Schedule:
        key = None if outputs is None else tuple(outputs)
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = self._schedules[key] = Schedule(self.plan, outputs)
        return schedule

    def _begin(
        self,
        inputs: dict[str, Any],
        outputs: list[str] | None,
        request_id: str | None,
        priority: int | None,
        timeout_s: float | None,
        trace: bool,
        streaming: bool,
    ) -> RequestRun:
        if not self._started:
            raise Unavailable(f"pipeline {self.plan.name!r} is not started")
        run = RequestRun(
            self,
            self._schedule(outputs),
            asyncio.get_running_loop(),
            request_id or str(next(self._ids)),
            priority or 0,
            timeout_s,
            trace,
            streaming,
        )
        try:
            run.begin(inputs)
        except BaseException:
            run.cancel()
            raise
        return run

    async def submit(
        self,
        inputs: dict[str, Any],
        outputs: list[str] | None = None,
        *,
        request_id: str | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        trace: bool = False,
    ) -> Result:
        """Run one request (inputs without batch dimension) and return its Result."""
        run = self._begin(inputs, outputs, request_id, priority, timeout_s, trace, False)
        try:
            return await run.future  # type: ignore[misc]
        except asyncio.CancelledError:
            run.cancel()
            raise

    async def stream(
        self,
        inputs: dict[str, Any],
        outputs: list[str] | None = None,
        *,
        request_id: str | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        trace: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Run one request, yielding deltas of streamed outputs as they come, then the final
        event. Leaving the loop early cancels the request."""
        run = self._begin(inputs, outputs, request_id, priority, timeout_s, trace, True)
        events = run.events
        assert events is not None
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.final:
                    return
        finally:
            if not run.finished:
                run.cancel()

    def submit_sync(self, inputs: dict[str, Any], outputs: list[str] | None = None, **kw) -> Result:
        """`submit` from a thread without an event loop (runs on the executor's own loop)."""
        future = asyncio.run_coroutine_threadsafe(self.submit(inputs, outputs, **kw), self.loop())
        return future.result()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The executor's background event loop (started on first use)."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pipectl-loop", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    # ---- batch handoff (worker thread → loop) -----------------------------------------------
    def _deliver(self, name: str, done: list[Done]) -> None:
        loop = done[0].item.ticket.loop  # type: ignore[attr-defined]
        if all(d.item.ticket.loop is loop for d in done):  # type: ignore[attr-defined]
            groups = {loop: done}
        else:
            groups = {}
            for d in done:
                groups.setdefault(d.item.ticket.loop, []).append(d)  # type: ignore[attr-defined]
        for loop, batch in groups.items():
            try:
                loop.call_soon_threadsafe(self._on_batch, name, batch)
            except RuntimeError:  # that loop is closed: its requests are gone
                pass

    def _on_batch(self, name: str, done: list[Done]) -> None:
        launches = Launches()
        for d in done:
            run: RequestRun = d.item.ticket  # type: ignore[assignment]
            if run.finished:
                continue
            if d.error is not None:
                run.fail(d.error)
            else:
                run.node_done(
                    name, d.outputs, d.queue_ns, d.batch_size, d.compute_ns, launches, d.instance
                )  # type: ignore[arg-type]
        launches.flush()

    # ---- streaming nodes ---------------------------------------------------------------------
    def start_stream(self, run: RequestRun, name: str, item: Item) -> None:
        """Hand `item` to a streaming node on the request's loop."""
        instances = self._streamers[name]
        index = next(self._rr) % len(instances)
        drive = self._drive_stream(run, name, instances[index], item, index)
        run.tasks.append(run.loop.create_task(drive))

    async def _drive_stream(
        self, run: RequestRun, name: str, node: Node, item: Item, instance: int = 0
    ) -> None:
        start = time.monotonic_ns()
        forward = run.schedule.steps[name].forward if run.events is not None else ()
        parts: dict[str, list[np.ndarray]] = {port: [] for port in node.stream_outputs}
        last: Item = {}
        stats = self._stream_stats[name]
        events = node.stream(item)
        try:
            async for delta in events:
                for port, chunks in parts.items():
                    if port in delta:
                        chunks.append(delta[port])
                last = delta
                if forward:
                    out = {o: delta[p] for p, o in forward if p in delta}
                    if out:
                        run.events.put_nowait(StreamEvent(out))  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a node failure fails its request
            error = node_failure(name, run.request_id, exc)
            stats["invalid" if isinstance(error, InvalidInput) else "failure"] += 1
            run.fail(error)
            return
        finally:
            await events.aclose()
        outputs = dict(last)
        for port, chunks in parts.items():
            if chunks:
                outputs[port] = concat_deltas(chunks)
        end = time.monotonic_ns()
        compute_ns = end - start
        stats["success"] += 1
        stats["compute_ns"] += compute_ns
        self._stream_recent[name].record_one(end, 0, compute_ns)
        if run.finished:
            return
        launches = Launches()
        run.node_done(name, outputs, 0, 1, compute_ns, launches, instance)
        launches.flush()

    # ---- statistics --------------------------------------------------------------------------
    def recent(self, name: str) -> RecentSamples | None:
        """The window of node `name`'s latest items (None for a node not running)."""
        batcher = self.batchers.get(name)
        return batcher.recent if batcher is not None else self._stream_recent.get(name)

    def statistics(self) -> dict[str, dict]:
        """Per node: success/failure counts, queue and compute ns totals, batch size histogram.
        Streaming nodes report `streaming: True`, and, when the node has `statistics()`, its
        numbers under the node's kind name (e.g. `llm`)."""
        stats: dict[str, dict] = {}
        for name in self.plan.nodes:
            if name in self.batchers:
                stats[name] = self.batchers[name].statistics()
            elif name in self._stream_stats:
                stats[name] = dict(self._stream_stats[name], streaming=True)
                engines = [
                    n.statistics()  # type: ignore[attr-defined]
                    for n in self._streamers.get(name, [])
                    if callable(getattr(n, "statistics", None))
                ]
                if engines:  # the node's own gauges (e.g. the LLM engine's), summed over instances
                    merged: dict[str, float] = {}
                    for engine_stats in engines:
                        for key, value in engine_stats.items():
                            merged[key] = merged.get(key, 0) + value
                    stats[name][self.plan.nodes[name].kind] = merged
        return stats


def concat_deltas(chunks: list[np.ndarray]) -> np.ndarray:
    """Join streamed deltas: BYTES element-wise (bytes concatenated), numbers along axis 0."""
    if chunks[0].dtype == object:
        first = chunks[0]
        flat = [c.reshape(-1) for c in chunks]
        out = np.empty(first.size, dtype=object)
        out[:] = [b"".join(parts) for parts in zip(*flat, strict=True)]
        return out.reshape(first.shape)
    return np.concatenate(chunks, axis=0)


__all__ = ["Executor", "RequestError", "Result", "StreamEvent", "concat_deltas"]
