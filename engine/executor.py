"""The executor: runs a Plan. One runner per node (engine/runner.py): a Batcher for batched
nodes, a Streamer for streaming ones (the LLM); each request a dataflow (engine/request.py) on
the loop that submitted it, handed its nodes' runners.

    executor = Executor(compile_file("pipelines/search.yaml"))
    executor.start()                                   # loads every instance
    result = await executor.submit({"query": np.array([b"open a file"], dtype=object)})
    result = executor.submit_sync({...})               # from plain threads
    async for event in executor.stream({...}): ...     # deltas of streamed outputs
    executor.stop()

Runners finish items through one path, `deliver`: once per batch it hands the finished items to
their request's loop (`loop.call_soon_threadsafe`), never once per item. It needs nothing of the
executor (each item names its node), so a batched node's runner can serve several executors:
nodes that pipelines share (engine/shared_runners.py) load once and batch together.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from typing import Any, Self

from engine import shared_runners
from engine.batcher import Batcher
from engine.dataflow import Dataflow
from engine.errors import NotASubPlan, RequestError, Unavailable
from engine.node_cache import NodeCache, node_caches
from engine.options import RequestOptions
from engine.plan import NodePlan, Plan
from engine.request import Launches, RequestRun
from engine.result import Result, StreamEvent
from engine.runner import Done, Runner
from engine.samples import RecentSamples
from engine.streamer import Streamer, concat_deltas

Progress = Callable[[str, int, int], None]  # (node, instances loaded so far, instances in all)


class Executor:
    """Runs requests through a compiled Plan; see the module docstring. Built with `runners`
    (see `view`), it runs on runners that another executor started and owns."""

    def __init__(
        self,
        plan: Plan,
        runners: Mapping[str, Runner] | None = None,
        caches: Mapping[str, NodeCache] | None = None,
    ):
        self.plan = plan
        # the response caches of nodes that ask for one (engine/node_cache.py), per loaded plan
        self.caches = dict(caches) if caches is not None else node_caches(plan.nodes)
        self.runners: dict[str, Runner] = dict(runners) if runners is not None else {}
        self._owns_runners = runners is None
        self._dataflows: dict[tuple[str, ...] | None, Dataflow] = {}
        self._ids = itertools.count(1)
        self._started = runners is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._shared: set[str] = set()  # nodes whose runner is shared (released, not stopped)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, progress: Progress | None = None) -> None:
        """Load every instance of every node (each in its own thread) and block until done."""
        if not self._owns_runners:
            return
        total = sum(len(n.instances) for n in self.plan.nodes.values())
        loaded = itertools.count(1)
        lock = threading.Lock()
        reported: dict[str, int] = dict.fromkeys(self.plan.nodes, 0)

        def on_loaded(name: str) -> None:
            with lock:
                reported[name] += 1
                if progress is not None:
                    progress(name, next(loaded), total)

        self._join_ray()
        self.runners = {}
        try:
            for name, node in self.plan.nodes.items():
                self.runners[name] = self._start_runner(node, partial(on_loaded, name))
            for runner in self.runners.values():
                runner.wait_loaded()
        except BaseException:
            self.stop(drain=False)
            raise
        for name in self._shared:  # loaded before, by another pipeline: reported now
            for _ in range(len(self.plan.nodes[name].instances) - reported[name]):
                on_loaded(name)
        self._dataflows.clear()
        self._dataflow_for(None)  # fail early on a bad condition
        self._started = True

    def unready_nodes(self, names: list[str] | None = None) -> list[str]:
        """The nodes (of `names`, default all) with an instance not serving now: a lost thread
        reloading, or a Ray actor being restarted (or gone for good)."""
        wanted = self.plan.nodes if names is None else names
        return [n for n in wanted if not getattr(self.runners.get(n), "healthy", True)]

    def _join_ray(self) -> None:
        """Nodes with backend: ray: join the cluster ($RAY_ADDRESS, else a private local one)
        and check that their actors fit in it (PlacementError with the numbers)."""
        if any(node.backend.is_ray for node in self.plan.nodes.values()):
            from engine.backends.ray_cluster import check_cluster, connect

            connect()
            check_cluster(self.plan)

    def _start_runner(self, node: NodePlan, on_loaded: Callable[[], None]) -> Runner:
        """The node's runner, started: shared with every node of the same key in the process
        (engine/shared_runners.py), else its own."""
        key = shared_runners.runner_key(node, self.plan.base_dir)
        if key is not None:
            runner = shared_runners.acquire(key, node, self.plan.base_dir, deliver, on_loaded)
            self._shared.add(node.name)
            return runner
        own: Runner
        if node.streaming:
            own = Streamer(node, self.plan.base_dir, deliver)
        else:
            own = Batcher(node, self.plan.base_dir, deliver)
        own.start(on_loaded)
        return own

    def view(self, plan: Plan) -> Executor:
        """An executor for `plan`, a sub-plan of this one's (e.g. one node served alone), that
        runs on this executor's runners: nothing is loaded twice and its requests batch with
        this executor's. Stopping the view leaves the runners to this executor."""
        if not self._started:
            raise Unavailable(f"model {plan.name!r}: its pipeline is not loaded")
        missing = [n for n in plan.nodes if n not in self.runners]
        if missing:
            raise NotASubPlan(f"{plan.name!r} is not a sub-plan: no nodes {', '.join(missing)}")
        return Executor(
            plan,
            runners={n: self.runners[n] for n in plan.nodes},
            caches={n: c for n, c in self.caches.items() if n in plan.nodes},
        )

    def stop(self, drain: bool = True) -> None:
        """Stop the runners this executor started (finishing queued work when `drain`) and the
        background loop of submit_sync."""
        self._started = False
        if self._owns_runners:
            for name, runner in self.runners.items():
                if name in self._shared:
                    shared_runners.release(runner, drain=drain)  # type: ignore[arg-type]
                else:
                    runner.stop(drain=drain)
            self._shared.clear()
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
    def _dataflow_for(self, outputs: list[str] | None) -> Dataflow:
        key = None if outputs is None else tuple(outputs)
        dataflow = self._dataflows.get(key)
        if dataflow is None:
            dataflow = self._dataflows[key] = Dataflow(self.plan, outputs)
        return dataflow

    def _begin(
        self,
        inputs: dict[str, Any],
        outputs: list[str] | None,
        options: RequestOptions,
        streaming: bool,
    ) -> RequestRun:
        if not self._started:
            raise Unavailable(f"pipeline {self.plan.name!r} is not started")
        request_id = options.request_id or str(next(self._ids))  # no replace(): hot path
        loop = asyncio.get_running_loop()
        dataflow = self._dataflow_for(outputs)
        run = RequestRun(dataflow, self.runners, loop, options, streaming, request_id, self.caches)
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
        options: RequestOptions | None = None,
        **fields: Any,
    ) -> Result:
        """Run one request (inputs without batch dimension) and return its Result. `options`
        or its fields as keywords (request_id, priority, timeout_s, trace): engine/options.py."""
        run = self._begin(inputs, outputs, RequestOptions.of(options, **fields), False)
        try:
            return await run.future  # type: ignore[misc]
        except asyncio.CancelledError:
            run.cancel()
            raise

    async def stream(
        self,
        inputs: dict[str, Any],
        outputs: list[str] | None = None,
        options: RequestOptions | None = None,
        **fields: Any,
    ) -> AsyncIterator[StreamEvent]:
        """Run one request, yielding deltas of streamed outputs as they come, then the final
        event. Leaving the loop early cancels the request. Options as for `submit`."""
        run = self._begin(inputs, outputs, RequestOptions.of(options, **fields), True)
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

    # ---- statistics --------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """Every node's instances are serving (False while a lost instance reloads)."""
        return all(getattr(r, "healthy", True) for r in self.runners.values())

    def recent(self, name: str) -> RecentSamples | None:
        """The window of node `name`'s latest items (None for a node not running)."""
        runner = self.runners.get(name)
        return runner.recent if runner is not None else None

    def statistics(self) -> dict[str, dict]:
        """Per node, its runner's statistics: success/failure counts, queue and compute ns
        totals, batch size histogram. Streaming nodes report `streaming: True`, and, when the
        node keeps its own statistics, those under the node's kind name (e.g. `llm`). A node
        whose runner pipelines share (engine/shared_runners.py) counts every sharer's items, and
        says how many nodes share it in `shared_by`."""
        out = {}
        for name in self.plan.nodes:
            runner = self.runners.get(name)
            if runner is None:
                continue
            out[name] = runner.statistics()
            if name in self._shared:
                out[name]["shared_by"] = shared_runners.users(runner)
        return out


# ---- the one completion path (any runner, any thread → the request's loop) -----------------
def deliver(done: list[Done]) -> None:
    """A runner's finished items, handed to their requests' loops once per loop."""
    loop = done[0].item.ticket.loop
    if all(d.item.ticket.loop is loop for d in done):
        groups = {loop: done}
    else:
        groups = {}
        for d in done:
            groups.setdefault(d.item.ticket.loop, []).append(d)
    for loop, batch in groups.items():
        try:
            loop.call_soon_threadsafe(_on_batch, batch)  # type: ignore[union-attr]
        except RuntimeError:  # that loop is closed: its requests are gone
            pass


def _on_batch(done: list[Done]) -> None:
    launches = Launches()
    for d in done:
        run: RequestRun = d.item.ticket  # type: ignore[assignment]
        if run.finished:
            continue
        if d.error is not None:
            run.fail(d.error)
        else:
            run.node_done(
                d.item.node,
                d.outputs,
                d.queue_ns,
                d.batch_size,
                d.compute_ns,
                launches,
                d.instance,
            )  # type: ignore[arg-type]
    launches.flush()


__all__ = ["Executor", "RequestError", "Result", "StreamEvent", "concat_deltas"]
