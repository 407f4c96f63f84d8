"""The Plan: what the compiler makes of a pipeline file and the executor runs. Plain data.

`pipectl plan` prints `Plan.to_dict()`; tests compare plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodes.base import NodeParams, Ports, TensorSpec

PIPELINE_INPUT = "$inputs"  # Source.node of a pipeline input


@dataclass(frozen=True)
class Source:
    """Where an input comes from: `node.port`, or a pipeline input when node is `$inputs`."""

    node: str
    port: str

    @property
    def is_pipeline_input(self) -> bool:
        return self.node == PIPELINE_INPUT

    def __str__(self) -> str:
        return f"{self.node}.{self.port}"


@dataclass(frozen=True)
class BatchPolicy:
    """Triton's dynamic batcher settings for one node."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()
    priority_levels: int = 1  # priorities are 1..priority_levels, 1 served first
    default_priority: int = 1
    max_queue_size: int = 0  # 0: unbounded; otherwise reject at once when full
    timeout_ms: float = 0.0  # 0: none; otherwise a queued item older than this is rejected


@dataclass(frozen=True)
class InstancePlan:
    """One placed instance of a node: the device it runs on and the memory it was given."""

    device: str
    memory_bytes: int = 0
    dtype: str = ""  # the resolved compute dtype (fp32, bf16, fp16), or "" for kinds without one
    dtype_reason: str = ""  # why, e.g. "cpu: AVX2, no native bf16 → fp32"


@dataclass(frozen=True)
class Backend:
    """Where a node's instances run: `local` threads of the serving process, or `ray` actors, each
    reserving `resources` (Ray's names: CPU, GPU, memory in bytes, custom ones) and restarted by
    Ray up to `max_restarts` times (-1: without end) when its process dies."""

    name: str = "local"
    resources: tuple[tuple[str, float], ...] = ()
    max_restarts: int = 0

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"

    def resource_dict(self) -> dict[str, float]:
        return dict(self.resources)

    def describe(self) -> str:
        """`local`, or `ray CPU=1 memory=2GiB zone_a=1 max_restarts=3`."""
        if not self.is_ray:
            return self.name
        parts = [
            f"{k}={v / (1 << 30):g}GiB" if k == "memory" else f"{k}={v:g}"
            for k, v in self.resources
        ]
        return " ".join(["ray", *parts, f"max_restarts={self.max_restarts}"])

    def to_dict(self) -> dict:
        out: dict = {"backend": self.name}
        if self.is_ray:
            out["resources"] = self.resource_dict()
            out["max_restarts"] = self.max_restarts
        return out


@dataclass(frozen=True)
class NodePlan:
    """A node as it will run: its kind, params, ports, wiring, batching and instances.
    `streaming` nodes (the LLM) run through a Streamer, not a Batcher, and yield deltas of
    their `stream_outputs` ports; both come from the kind, once, at compile time."""

    name: str
    kind: str
    params: NodeParams
    ports: Ports
    inputs: dict[str, Source]
    batching: BatchPolicy
    instances: tuple[InstancePlan, ...]
    when: str | None = None
    line: int = 0
    streaming: bool = False
    stream_outputs: tuple[str, ...] = ()
    backend: Backend = field(default_factory=Backend)
    response_cache: tuple[int, int] | None = None  # (max_entries, max_bytes): engine/node_cache.py

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "params": self.params.model_dump(mode="json"),
            "inputs": {port: str(src) for port, src in self.inputs.items()},
            "outputs": {
                name: {"dtype": spec.dtype, "shape": list(spec.shape)}
                for name, spec in self.ports.outputs.items()
            },
            "batching": {
                "max_batch_size": self.batching.max_batch_size,
                "max_queue_delay_ms": self.batching.max_queue_delay_ms,
                "preferred_batch_sizes": list(self.batching.preferred_batch_sizes),
                "priority_levels": self.batching.priority_levels,
                "default_priority": self.batching.default_priority,
                "max_queue_size": self.batching.max_queue_size,
                "timeout_ms": self.batching.timeout_ms,
            },
            "instances": [
                {"device": i.device, "memory_bytes": i.memory_bytes}
                | ({"dtype": i.dtype, "dtype_reason": i.dtype_reason} if i.dtype else {})
                for i in self.instances
            ],
            "placement": self.backend.to_dict(),
            "when": self.when,
        } | (
            {"response_cache": dict(zip(("max_entries", "max_bytes"), self.response_cache))}
            if self.response_cache
            else {}
        )


@dataclass(frozen=True)
class Plan:
    """A compiled pipeline. `nodes` is in topological order."""

    name: str
    file: str
    base_dir: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, Source]
    nodes: dict[str, NodePlan]
    warnings: tuple[str, ...] = field(default=())
    version: int = 1  # the model version it serves (Triton's; `version:` in the file)
    response_cache: tuple[int, int] | None = None  # (max_entries, max_bytes) when cached

    def needed_nodes(self, outputs: list[str] | None = None) -> list[str]:
        """The nodes that must run to produce `outputs` (all pipeline outputs when None), in
        topological order."""
        wanted = list(self.outputs) if outputs is None else outputs
        needed: set[str] = set()
        stack = [self.outputs[o].node for o in wanted]
        while stack:
            name = stack.pop()
            if name == PIPELINE_INPUT or name in needed:
                continue
            needed.add(name)
            stack.extend(src.node for src in self.nodes[name].inputs.values())
        return [n for n in self.nodes if n in needed]

    def streamed_outputs(self) -> frozenset[str]:
        """The pipeline outputs fed by a streaming node's streamed ports (token deltas)."""
        return frozenset(
            name
            for name, src in self.outputs.items()
            if not src.is_pipeline_input and src.port in self.nodes[src.node].stream_outputs
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "file": self.file,
            "inputs": {
                n: {"dtype": s.dtype, "shape": list(s.shape)} for n, s in self.inputs.items()
            },
            "outputs": {n: str(src) for n, src in self.outputs.items()},
            "nodes": {n: node.to_dict() for n, node in self.nodes.items()},
            "warnings": list(self.warnings),
        }
