"""The request path of a server: every served model, their loading state, and `infer` / `stream`.

Both protocols go through `Repository.infer` / `Repository.stream`: inputs carry the client's batch
dimension; each batch item becomes one executor request and the results are stacked back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput, NotFound, Unavailable
from engine.options import RequestOptions
from engine.plan import Plan
from engine.response_cache import request_key, uncacheable_nodes
from engine.result import Result
from engine.server.batch_results import (
    assemble_stream,
    batch_size,
    gather_items,
    reraise,
    stack_outputs,
)
from engine.server.model import LOADING, READY, UNAVAILABLE, ServedModel, shared_executor
from engine.server.request_check import check_request
from engine.server.traces import RequestTracer, TracedRequest
from engine.server.versions import PipelineVersion, build_version

if TYPE_CHECKING:
    from engine.executor import Executor

log = logging.getLogger("pipectl.server")

__all__ = ["LOADING", "READY", "UNAVAILABLE", "PipelineVersion", "Repository", "ServedModel"]


class Repository:
    """Every served model, their loading state, and the request path into the executors."""

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}  # routing: name -> its default version's model
        self.pipelines: list[str] = []  # routed pipeline names
        # /v1 names that are no KServe name (vLLM's --served-model-name org/model) -> pipeline
        self.openai_names: dict[str, str] = {}
        self.versions: dict[str, dict[str, PipelineVersion]] = {}  # pipeline -> version -> it
        self.unavailable: dict[tuple[str, str], str] = {}  # (name, version) -> why, for the index
        self.control = None  # a model_control.ModelControl with --model-repository
        self.started = False  # set once the start-up loads are done: ready waits for it
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._node_lock = threading.Lock()
        self.tracers: list[RequestTracer] = []  # the live page's sampler, OpenTelemetry export
        self.propagate = False  # whether a tracer reads the client's W3C traceparent

    # ---- registration, versions and routing ------------------------------------------------
    def add(self, plan: Plan, source: str = "", stamp: tuple = ()) -> PipelineVersion:
        """Register a pipeline version and its node models (state LOADING); the first version of
        a name is routed at once, so that requests see it loading."""
        version = str(plan.version)
        if version in self.versions.get(plan.name, {}):
            raise ValueError(f"two pipelines are named {plan.name!r} (version {version})")
        pv = build_version(plan, source, stamp)
        self.versions.setdefault(plan.name, {})[version] = pv
        if plan.name not in self.models:
            self.route(plan.name)
        return pv

    def route(self, name: str) -> None:
        """Point `name` and its node models at the default version: the highest READY one, else
        the highest. Requests already running keep the version they started on."""
        for model in [m for m in self.models.values() if m.pipeline == name]:
            del self.models[model.name]
        versions = list(self.versions.get(name, {}).values())
        if not versions:
            if name in self.pipelines:
                self.pipelines.remove(name)
            return
        ready = [v for v in versions if v.state == READY]
        pv = max(ready or versions, key=lambda v: int(v.version))
        self.models.update(pv.models)
        if name not in self.pipelines:
            self.pipelines.append(name)

    def served_versions(self, name: str) -> list[str]:
        """The versions of pipeline or node model `name` that are loaded, lowest first."""
        pipeline = name.split(".", 1)[0]
        versions = self.versions.get(pipeline, {})
        return sorted((v for v, pv in versions.items() if name in pv.models), key=int)

    def load(self, pipeline: str, progress: Callable[[str], None] | None = None) -> None:
        """Start the routed version of a pipeline (blocking: call it from a thread)."""
        self.models[pipeline].family.start(progress)  # type: ignore[union-attr]
        self.route(pipeline)

    def stop(self, drain: bool = True) -> None:
        """Stop every pipeline executor (blocking); node models share them."""
        for versions in self.versions.values():
            for pv in versions.values():
                pv.stop(drain=drain)

    @property
    def ready(self) -> bool:
        return (
            self.started
            and not self.draining
            and (bool(self.models) or self.control is not None)
            and all(m.state == READY for m in self.models.values())
            and all(
                m.executor.healthy for m in self.models.values()
                if m.node is None and m.executor is not None
            )
        )  # fmt: skip

    def model_ready(self, model: ServedModel) -> bool:
        """Loaded, not draining, and every instance of its nodes up (a node whose Ray actor is
        being restarted reports not ready meanwhile; its other instances keep serving)."""
        if model.state != READY or self.draining:
            return False
        executor = getattr(model.family, "executor", None)
        if executor is None:
            return False
        return not executor.unready_nodes(None if model.node is None else [model.node])

    def get(self, name: str, version: str = "") -> ServedModel:
        """The model called `name` (at `version`; its default version when ""); NotFound lists
        the models."""
        if not version:
            model = self.models.get(name)
        else:
            pv = self.versions.get(name.split(".", 1)[0], {}).get(version)
            model = pv.models.get(name) if pv is not None else None
        if model is None:
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            served = self.served_versions(name)
            versions = f" (versions: {', '.join(served)})" if served else ""
            raise NotFound(f"{what} is not served{versions}; models: {', '.join(self.models)}")
        return model

    def serving(self, name: str, version: str = "") -> ServedModel:
        """The model called `name`, ready to take requests (else NotFound or Unavailable)."""
        model = self.get(name, version)
        if self.draining:
            raise Unavailable("the server is shutting down")
        if model.state != READY:
            why = f": {model.reason}" if model.reason else ""
            raise Unavailable(f"model {name!r} is {model.state.lower()}{why}")
        return model

    def _executor(self, model: ServedModel) -> Executor:
        if model.executor is not None:
            return model.executor
        with self._node_lock:  # node models: made on first use, on the pipeline's instances
            if model.executor is None:
                model.executor = shared_executor(model.family.executor, model.plan)
        return model.executor

    # ---- requests ------------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        *,
        version: str = "",
        options: RequestOptions | None = None,
        **fields: Any,
    ) -> dict[str, np.ndarray]:
        """Run one client request (inputs with a batch dimension); returns batched outputs.
        `options` (or its fields as keywords, engine/options.py) travel to every item's request;
        its `traceparent` is handed to the tracers. A pipeline with a response cache answers a
        deterministic request it has seen from the cache."""
        options = RequestOptions.of(options, **fields)
        model = self.serving(name, version)
        key = self._cache_key(model, inputs, outputs)
        if key is None:
            return await self._infer(model, inputs, outputs, options)
        started = time.monotonic_ns()
        hit = model.cache.get(key)  # type: ignore[attr-defined]
        if hit is not None:
            model.cache.record(True, time.monotonic_ns() - started)  # type: ignore[attr-defined]
            model.stats.record(True, batch_size(inputs), time.monotonic_ns() - started)
            return hit
        out = await self._infer(model, inputs, outputs, options)
        model.cache.put(key, out)  # type: ignore[attr-defined]
        model.cache.record(False, time.monotonic_ns() - started)  # type: ignore[attr-defined]
        return out

    def _cache_key(self, model: ServedModel, inputs: dict, outputs) -> bytes | None:
        """The response-cache key of a request, or None when it is not cached."""
        if model.cache is None or uncacheable_nodes(model.plan, inputs):
            return None
        return request_key(model.name, model.version, inputs, outputs or list(model.outputs))

    async def _infer(
        self, model: ServedModel, inputs, outputs, options: RequestOptions
    ) -> dict[str, np.ndarray]:
        request_id, traceparent = options.request_id, options.traceparent
        self._enter(model)  # before any await: a reload waits for it before stopping its version
        try:
            batch = check_request(model, inputs, outputs)
            executor = await self._executor_async(model)
        except BaseException:
            self._exit(model)
            raise
        wanted = list(outputs) if outputs else list(model.outputs)
        traced = bool(self.tracers) and self._wants(model, traceparent)
        options = replace(options, trace=traced)
        started = time.monotonic_ns()
        try:
            calls = [
                executor.submit({k: v[i] for k, v in inputs.items()}, wanted, options.for_item(i, batch))
                for i in range(batch)
            ]  # fmt: skip
            results = await gather_items(calls)
            out = stack_outputs(wanted, [r.outputs for r in results])
        except Exception as exc:  # noqa: BLE001 - any failure becomes a typed error
            model.stats.record(False, batch, time.monotonic_ns() - started)
            if traced:
                self._traced(model, request_id, started, [], exc, traceparent)
            reraise(exc, model)
        finally:
            self._exit(model)
        model.stats.record(True, batch, time.monotonic_ns() - started, results)
        if traced:
            self._traced(model, request_id, started, results, None, traceparent)
        return out

    async def stream(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        *,
        version: str = "",
        options: RequestOptions | None = None,
        **fields: Any,
    ) -> AsyncIterator[tuple[dict[str, np.ndarray], bool]]:
        """Stream one request (batch size 1): yields (delta outputs with batch dim, final).
        Options as for `infer`."""
        options = RequestOptions.of(options, **fields)
        request_id, traceparent = options.request_id, options.traceparent
        model = self.serving(name, version)
        batch = check_request(model, inputs, outputs)
        if not model.decoupled:
            out = await self.infer(name, inputs, outputs, version=version, options=options)
            yield out, True
            return
        if batch != 1:
            raise InvalidInput(f"model {name!r} streams: send one item per request, not {batch}")
        key, cached = self._cached_stream(model, inputs, outputs)
        if cached is not None:  # the whole answer at once, as its stream joined it
            yield cached, True
            return
        executor = await self._entered_executor(model)
        wanted = list(outputs) if outputs else list(model.outputs)
        item = {k: v[0] for k, v in inputs.items()}
        traced = bool(self.tracers) and self._wants(model, traceparent)
        started = time.monotonic_ns()
        ok = False
        results: list[Result] = []
        seen: list[dict[str, np.ndarray]] = []
        try:
            async for event in executor.stream(item, wanted, replace(options, trace=traced)):
                if event.final and event.result is not None:
                    results.append(event.result)
                delta = {k: v[np.newaxis] for k, v in event.outputs.items()}
                if key is not None:
                    seen.append(delta)
                yield delta, event.final
            ok = True
            if key is not None:
                model.cache.put(key, assemble_stream(seen, model.streamed))  # type: ignore[attr-defined]
                model.cache.record(False, time.monotonic_ns() - started)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - any failure becomes a typed error
            if traced:
                self._traced(model, request_id, started, [], exc, traceparent)
                traced = False
            reraise(exc, model)
        finally:
            model.stats.record(ok, 1, time.monotonic_ns() - started, results)
            self._exit(model)
            if traced:
                error = None if ok else Unavailable("the client went away")
                self._traced(model, request_id, started, results, error, traceparent)

    def _cached_stream(self, model: ServedModel, inputs, outputs) -> tuple[Any, Any]:
        """(the response-cache key or None, the cached answer or None); a hit is counted."""
        key = self._cache_key(model, inputs, outputs)
        cached = model.cache.get(key) if key is not None else None  # type: ignore[attr-defined]
        if cached is not None:
            model.cache.record(True, 0)  # type: ignore[attr-defined]
            model.stats.record(True, 1, 0)
        return key, cached

    async def _entered_executor(self, model: ServedModel) -> Executor:
        """The model's executor, the request counted in flight (before any await: a reload
        waits for it before stopping its version)."""
        self._enter(model)
        try:
            return await self._executor_async(model)
        except BaseException:
            self._exit(model)
            raise

    # ---- tracing ----------------------------------------------------------------------------
    def add_tracer(self, tracer: RequestTracer) -> None:
        """Hand every request's trace (when `tracer.wants` it) to `tracer` from now on."""
        self.tracers.append(tracer)
        self.propagate = self.propagate or bool(getattr(tracer, "propagates", False))

    def _wants(self, model: ServedModel, traceparent: str | None) -> bool:
        wants = False
        for tracer in self.tracers:  # ask each: a sampler counts what it was asked
            wants = tracer.wants(model.pipeline, traceparent) or wants
        return wants

    def _traced(
        self,
        model: ServedModel,
        request_id: str,
        started_ns: int,
        results: list[Result],
        error: BaseException | None,
        traceparent: str | None,
    ) -> None:
        """Hand a traced request to every tracer; a tracer's failure never fails the request."""
        request = TracedRequest(
            model.name, model.pipeline, request_id or (results[0].request_id if results else ""),
            started_ns, time.monotonic_ns(), results,
            error=f"{type(error).__name__}: {error}" if error is not None else "",
            status=getattr(error, "status", "INTERNAL") if error is not None else "",
            traceparent=traceparent,
        )  # fmt: skip
        for tracer in self.tracers:
            try:
                tracer.finished(request)
            except Exception as exc:  # noqa: BLE001 - observability must not break serving
                log.warning("tracer %s failed: %s", type(tracer).__name__, exc)

    async def _executor_async(self, model: ServedModel) -> Executor:
        if model.executor is not None:
            return model.executor
        return await asyncio.get_running_loop().run_in_executor(None, self._executor, model)

    # ---- draining ------------------------------------------------------------------------
    def _enter(self, model: ServedModel) -> None:
        self._inflight += 1
        self._idle.clear()
        model.family.enter()  # type: ignore[union-attr]

    def _exit(self, model: ServedModel) -> None:
        model.family.exit()  # type: ignore[union-attr]
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for in-flight ones; False if the wait timed out."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
