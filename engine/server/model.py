"""The models a server hosts: each pipeline, and each of its nodes as `<pipeline>.<node>`.

A node model runs a one-node sub-plan (see `node_plan`): the node's wired input ports become the
model's inputs (named after the ports), its output ports its outputs. Its executor runs on the
pipeline executor's loaded instances (same batchers, same streaming nodes; see `shared_executor`),
so a node model costs no memory and its requests batch together with the pipeline's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from engine.errors import Unavailable
from engine.plan import PIPELINE_INPUT, Plan, Source
from nodes.base import TensorSpec

if TYPE_CHECKING:  # the executor pulls in the node machinery: imported late where it runs
    from engine.executor import Executor

LOADING, READY, UNAVAILABLE = "LOADING", "READY", "UNAVAILABLE"


def node_plan(plan: Plan, node: str) -> Plan:
    """The one-node plan that runs `node` of `plan` alone: inputs are its wired ports."""
    np_ = plan.nodes[node]
    inputs = {port: np_.ports.inputs[port] for port in np_.inputs}
    wired = {port: Source(PIPELINE_INPUT, port) for port in np_.inputs}
    return Plan(
        version=plan.version,
        name=f"{plan.name}.{node}",
        file=plan.file,
        base_dir=plan.base_dir,
        inputs=inputs,
        outputs={port: Source(node, port) for port in np_.ports.outputs},
        nodes={node: replace(np_, inputs=wired, when=None)},
    )


@dataclass
class ModelStats:
    """Request-level counters of one model (Triton's InferStatistics for the whole model)."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    inference_count: int = 0  # batch items
    execution_count: int = 0  # requests
    last_inference_ms: int = 0
    queue_ns: int = 0  # of this model's own successful requests (shared nodes' others excluded)
    compute_ns: int = 0

    def record(self, ok: bool, items: int, elapsed_ns: int, results=()) -> None:
        """Count one request of `items` batch items that took `elapsed_ns`; `results` (its
        items' engine.result.Result) add its queue and compute time: the slowest item's, as
        the items of one request run side by side."""
        if ok:
            self.success_count += 1
            self.success_ns += elapsed_ns
            self.inference_count += items
            self.queue_ns += max((r.queue_ns for r in results), default=0)
            self.compute_ns += max((r.compute_ns for r in results), default=0)
        else:
            self.fail_count += 1
            self.fail_ns += elapsed_ns
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)


@dataclass
class ServedModel:
    """One model a client can name: a pipeline, or one node of a pipeline."""

    name: str
    pipeline: str
    node: str | None
    plan: Plan
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    streamed: frozenset[str]
    executor: Executor | None = None
    state: str = LOADING
    reason: str = ""
    stats: ModelStats = field(default_factory=ModelStats)
    version: str = "1"
    family: object | None = field(default=None, repr=False)  # its versions.PipelineVersion
    cache: object | None = None  # a response_cache.ResponseCache (pipelines that ask for one)

    @property
    def decoupled(self) -> bool:
        return bool(self.streamed)

    def __post_init__(self) -> None:
        from nodes.dtypes import numpy_dtype

        self.numpy_dtypes = {n: numpy_dtype(s.dtype) for n, s in self.inputs.items()}

    def where(self, input_name: str) -> str:
        """`input 'x' of model 'm' (read by node a, b)`, for error messages."""
        nodes = ", ".join(self.consumers(input_name))
        return f"input {input_name!r} of model {self.name!r} (read by node {nodes})"

    def consumers(self, input_name: str) -> list[str]:
        """The nodes that read a model input (for error messages)."""
        return [
            n
            for n, node in self.plan.nodes.items()
            for src in node.inputs.values()
            if src.is_pipeline_input and src.port == input_name
        ]


def new_executor(plan: Plan) -> Executor:
    """An Executor for `plan` (imported late: the executor pulls in the node machinery)."""
    from engine.executor import Executor

    return Executor(plan)


def shared_executor(parent: Executor | None, plan: Plan) -> Executor:
    """An executor for the sub-plan `plan` that runs on `parent`'s loaded instances (nothing is
    loaded twice; see Executor.view)."""
    if parent is None:
        raise Unavailable(f"model {plan.name!r}: its pipeline is not loaded")
    return parent.view(plan)
