"""One loaded version of a pipeline: its executor, the models it serves (the pipeline and its
`<pipeline>.<node>` models), its state and its in-flight requests.

A reload makes a new PipelineVersion beside the old one; the repository routes new requests to it
once it is READY, and the old one drains (`wait_idle`) before `stop` frees its threads, KV cache
and Ray actors. States are Triton's: LOADING, READY, UNLOADING, UNAVAILABLE (with a reason).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.plan import Plan
from engine.server.model import (
    LOADING,
    READY,
    UNAVAILABLE,
    ServedModel,
    new_executor,
    node_plan,
)

if TYPE_CHECKING:
    from engine.executor import Executor

UNLOADING = "UNLOADING"


@dataclass(eq=False)
class PipelineVersion:
    """A pipeline at one version, from one file: see the module docstring."""

    name: str
    version: str
    plan: Plan
    models: dict[str, ServedModel]
    source: str = ""  # the file it was compiled from ("" for files named on the command line)
    stamp: tuple = ()  # that file's (mtime_ns, size, sha256) when compiled: poll compares it
    executor: Executor | None = None
    state: str = LOADING
    reason: str = ""
    # why the latest reload of this same version failed while this load serves on ("" when
    # none): RepositoryIndex shows the version UNAVAILABLE with it, ModelReady stays true
    reload_failure: str = ""
    inflight: int = 0
    _idle: asyncio.Event | None = field(default=None, repr=False)

    def set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        for model in self.models.values():
            model.state, model.reason = state, reason

    # ---- in-flight requests (on the event loop) ----------------------------------------------
    def enter(self) -> None:
        self.inflight += 1
        if self._idle is not None:
            self._idle.clear()

    def exit(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request holds this version; False if `timeout_s` passed first."""
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.inflight == 0:
            self._idle.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    # ---- loading and freeing (blocking: call from a thread) ----------------------------------
    def start(self, progress=None) -> None:
        """Load every instance; READY on success, else UNAVAILABLE with the reason (raised)."""
        try:
            executor = new_executor(self.plan)
            executor.start(progress=progress)
        except Exception as exc:
            self.set_state(UNAVAILABLE, f"{type(exc).__name__}: {exc}")
            raise
        self.executor = executor
        self.models[self.name].executor = executor
        self.set_state(READY)

    def stop(self, drain: bool = True) -> None:
        """Stop the executor (threads, LLM engines and their KV cache, Ray actors) and drop every
        reference to it, then hand freed heap back to the OS."""
        executor, self.executor = self.executor, None
        for model in self.models.values():
            model.executor = None
        if executor is not None:
            executor.stop(drain=drain)
        del executor
        gc.collect()
        _trim_heap()


def build_version(plan: Plan, source: str = "", stamp: tuple = ()) -> PipelineVersion:
    """A PipelineVersion (LOADING) serving `plan` and each of its nodes as `<pipeline>.<node>`."""
    outputs = {n: plan.nodes[s.node].ports.outputs[s.port] for n, s in plan.outputs.items()}
    version = str(plan.version)
    models = {
        plan.name: ServedModel(plan.name, plan.name, None, plan, dict(plan.inputs), outputs,
                               plan.streamed_outputs(), version=version)
    }  # fmt: skip
    for node in plan.nodes:
        sub = node_plan(plan, node)
        sub_outputs = {n: plan.nodes[node].ports.outputs[n] for n in sub.outputs}
        models[sub.name] = ServedModel(
            sub.name, plan.name, node, sub, dict(sub.inputs), sub_outputs,
            sub.streamed_outputs(), version=version,
        )  # fmt: skip
    if plan.response_cache is not None:
        from engine.response_cache import ResponseCache

        models[plan.name].cache = ResponseCache(*plan.response_cache)
    pv = PipelineVersion(plan.name, version, plan, models, source, stamp)
    for model in models.values():
        model.family = pv
    return pv


def _trim_heap() -> None:
    """glibc keeps freed arenas mapped; malloc_trim(0) returns them, so that memory after a
    model is unloaded goes back to where it was (man 3 malloc_trim)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


__all__ = ["LOADING", "READY", "UNAVAILABLE", "UNLOADING", "PipelineVersion", "build_version"]
