"""What a benchmark calls: a Target sends one request and says how it went (a Sample), and reads
the server-side per-node counters (for perf_analyzer's split of queue, batch and compute time).

`InProcess` runs a pipeline file in this process through the Executor; engine/bench/remote.py
holds the gRPC, HTTP and OpenAI targets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodes.base import TensorSpec

Inputs = dict[str, np.ndarray]  # one request, without the batch dimension


@dataclass(slots=True)
class Sample:
    """One request: when it started and ended (`time.perf_counter()` s), whether it failed, and
    for streamed outputs when each non-empty delta arrived and how many tokens it made."""

    start: float
    end: float = 0.0
    error: str = ""
    deltas: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def latency_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class NodeCounters:
    """Cumulative server-side counters of one node (as ModelStatistics reports them)."""

    success: int = 0
    batches: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    failure: int = 0


class Target:
    """A pipeline to load. `inputs` are the pipeline's input specs, `streaming` whether it has
    streamed outputs (then samples carry delta times)."""

    name: str = ""
    inputs: dict[str, TensorSpec]
    streaming: bool = False
    description: str = ""
    knows_optional: bool = False  # whether `inputs` says which inputs may be left out

    async def open(self) -> None:
        """Connect (or load); called once before the first level."""

    async def call(self, inputs: Inputs) -> Sample:
        raise NotImplementedError

    async def counters(self) -> dict[str, NodeCounters]:
        """Per node, the server's cumulative counters ({} when the target has none)."""
        return {}

    async def close(self) -> None:
        """Release connections (or stop the executor)."""


def tokens_of(outputs: dict[str, Any], deltas: int) -> int:
    """Tokens a streamed request made: its `completion_tokens` output if any, else one per
    non-empty delta."""
    value = outputs.get("completion_tokens")
    if value is not None:
        try:
            return int(np.asarray(value).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            pass
    return deltas


def _nonempty(value: np.ndarray) -> bool:
    if value.dtype == object:
        return any(len(v) for v in value.reshape(-1))
    return value.size > 0


class InProcess(Target):
    """A pipeline file compiled and loaded here; requests go through `Executor.submit`, or
    `Executor.stream` when it has streamed outputs."""

    def __init__(self, path: str, outputs: list[str] | None = None):
        from engine.commands.validate import compile_or_report
        from engine.errors import PipelineError

        plan = compile_or_report(path)
        if plan is None:
            raise PipelineError(f"{path}: the pipeline does not compile (see above)")
        self.plan = plan
        self.name = plan.name
        self.inputs = dict(plan.inputs)
        self.outputs = outputs
        self.streamed = plan.streamed_outputs() & set(outputs or plan.outputs)
        self.streaming = bool(self.streamed)
        self.description = f"{path} in process"
        self.knows_optional = True
        self.executor = None
        self.owned = True  # started by open(), stopped by close()

    @classmethod
    def of(cls, executor, outputs: list[str] | None = None) -> InProcess:
        """A target over an executor the caller started (and stops): for bench/ scripts that
        compile their own pipelines."""
        target = cls.__new__(cls)
        target.plan, target.name = executor.plan, executor.plan.name
        target.inputs, target.outputs = dict(executor.plan.inputs), outputs
        target.streamed = executor.plan.streamed_outputs() & set(outputs or executor.plan.outputs)
        target.streaming = bool(target.streamed)
        target.description, target.knows_optional = f"{target.name} in process", True
        target.executor, target.owned = executor, False
        return target

    async def open(self) -> None:
        import asyncio

        from engine.executor import Executor

        if self.executor is not None:
            return
        self.executor = Executor(self.plan)
        await asyncio.get_running_loop().run_in_executor(None, self.executor.start)

    async def call(self, inputs: Inputs) -> Sample:
        from engine.errors import RequestError

        sample = Sample(time.perf_counter())
        try:
            if self.streaming:
                await self._stream(inputs, sample)
            else:
                await self.executor.submit(inputs, self.outputs)  # type: ignore[union-attr]
        except RequestError as exc:
            sample.error = f"{exc.status}: {exc}"
        sample.end = time.perf_counter()
        return sample

    async def _stream(self, inputs: Inputs, sample: Sample) -> None:
        final: dict = {}
        async for event in self.executor.stream(inputs, self.outputs):  # type: ignore[union-attr]
            if any(_nonempty(event.outputs[o]) for o in self.streamed if o in event.outputs):
                sample.deltas.append(time.perf_counter())
            if event.final:
                final = event.outputs
        sample.tokens = tokens_of(final, len(sample.deltas))

    async def counters(self) -> dict[str, NodeCounters]:
        out = {}
        for name, s in self.executor.statistics().items():  # type: ignore[union-attr]
            batches = s.get("batches", s.get("success", 0) + s.get("failure", 0))
            failure = s.get("failure", 0) + s.get("expired", 0) + s.get("rejected", 0)
            out[name] = NodeCounters(
                s.get("success", 0), batches, s.get("queue_ns", 0), s.get("compute_ns", 0), failure
            )
        return out

    async def close(self) -> None:
        if self.executor is not None and self.owned:
            self.executor.stop(drain=False)
            self.executor = None
