"""The dataflow of one set of requested outputs, worked out once and reused by every request:
which nodes run, what each waits for, who consumes each tensor, and when a tensor can go."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.coercion import default_value
from engine.errors import InvalidInput
from engine.plan import PIPELINE_INPUT, Plan
from nodes.base import TensorSpec


@dataclass(frozen=True, slots=True)
class Step:
    """One node of the schedule. Keys name tensors as `node.port` (`$inputs.name` for inputs)."""

    name: str
    inputs: tuple[tuple[str, str, TensorSpec, np.ndarray | None], ...]  # port, key, spec, default
    input_keys: tuple[str, ...]  # distinct keys: one wait, one release each
    outputs: tuple[tuple[str, str], ...]  # port, key: only those someone consumes
    condition: object | None  # engine.condition.Condition
    streaming: bool
    forward: tuple[tuple[str, str], ...]  # streamed port → pipeline output, for stream()


class Dataflow:
    """Nodes needed for `outputs` (all when None), in topological order, with wait counts."""

    def __init__(self, plan: Plan, outputs: list[str] | None = None):
        wanted = list(plan.outputs) if outputs is None else list(outputs)
        unknown = [o for o in wanted if o not in plan.outputs]
        if unknown:
            raise InvalidInput(
                f"unknown output {unknown[0]!r}; outputs: {', '.join(plan.outputs) or '(none)'}"
            )
        self.outputs: dict[str, str] = {o: str(plan.outputs[o]) for o in wanted}
        self.pipeline_inputs: tuple[str, ...] = tuple(plan.inputs)  # all, for unknown names
        names = plan.needed_nodes(wanted)
        consumers: dict[str, list[str]] = {}
        for name in names:
            for key in dict.fromkeys(str(src) for src in plan.nodes[name].inputs.values()):
                consumers.setdefault(key, []).append(name)
        self.consumers: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in consumers.items()}
        # a tensor is released after its last consuming node took it; outputs are kept to the end
        self.refcounts: dict[str, int] = {k: len(v) for k, v in consumers.items()}
        for key in self.outputs.values():
            self.refcounts[key] = self.refcounts.get(key, 0) + (1 << 30)
        self.inputs: dict[str, TensorSpec] = {}
        for key in consumers.keys() | set(self.outputs.values()):
            node, _, port = key.partition(".")
            if node == PIPELINE_INPUT:
                self.inputs[port] = plan.inputs[port]
        self.steps: dict[str, Step] = {}
        self.streamed_outputs: set[str] = set()
        for name in names:
            self.steps[name] = self._step(plan, name)
            self.streamed_outputs.update(out for _, out in self.steps[name].forward)
        self.pending: dict[str, int] = {n: len(s.input_keys) for n, s in self.steps.items()}
        self.roots: tuple[str, ...] = tuple(n for n, count in self.pending.items() if count == 0)

    def _step(self, plan: Plan, name: str) -> Step:
        node = plan.nodes[name]
        inputs = []
        for port, src in node.inputs.items():
            spec = node.ports.inputs.get(port) or TensorSpec("BYTES", (-1,))
            inputs.append((port, str(src), spec, default_value(spec) if spec.optional else None))
        consumed = {key for key in self.consumers} | set(self.outputs.values())
        outputs = tuple(
            (port, f"{name}.{port}") for port in node.ports.outputs if f"{name}.{port}" in consumed
        )
        condition = None
        if node.when:
            from engine.condition import parse_condition

            condition = parse_condition(node.when)
        forward: tuple[tuple[str, str], ...] = ()
        if node.streaming:
            forward = tuple(
                (src.port, out)
                for out, src in ((o, plan.outputs[o]) for o in self.outputs)
                if src.node == name and src.port in node.stream_outputs
            )
        return Step(
            name=name,
            inputs=tuple(inputs),
            input_keys=tuple(dict.fromkeys(str(src) for src in node.inputs.values())),
            outputs=outputs,
            condition=condition,
            streaming=node.streaming,
            forward=forward,
        )
