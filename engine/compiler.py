"""The compiler: the only place that turns a pipeline file into a Plan (ARCHITECTURE §3).

It runs every check, refuses a graph with errors (GraphError listing all of them), orders the
nodes topologically (file order among equals), merges `defaults`, and places the instances.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from engine.errors import GraphError, PlacementError
from engine.graph import Analysis, NodeInfo, analyze, parse_ref
from engine.placement import Device, PlacementRequest, inventory, place
from engine.plan import NodePlan, Plan
from engine.spec import PipelineSpec, load_spec
from nodes.base import TensorSpec


def compile_file(path: str | Path, devices: list[Device] | None = None) -> Plan:
    """Load, check and compile a pipeline file (SpecError, GraphError or PlacementError)."""
    return compile_spec(load_spec(path), devices)


def compile_spec(spec: PipelineSpec, devices: list[Device] | None = None) -> Plan:
    """Compile a parsed spec against `devices` (the machine's inventory when None)."""
    analysis = analyze(spec)
    if analysis.errors:
        raise GraphError(analysis.issues)
    order = topological_order(analysis)
    requests = [_placement_request(spec, analysis.nodes[name]) for name in order]
    placed = place(requests, inventory() if devices is None else devices)
    nodes = {}
    for name in order:
        info = analysis.nodes[name]
        assert None not in (info.kind, info.params, info.ports, info.batching)  # no errors left
        nodes[name] = NodePlan(
            name=name,
            kind=info.spec.kind,
            params=info.params,
            ports=info.ports,
            inputs=dict(info.sources),
            batching=info.batching,
            instances=placed[name],
            when=info.spec.when,
            line=spec.line(f"nodes.{name}"),
        )
    outputs = {}
    for name, text in spec.outputs.items():
        src = parse_ref(text)
        assert src is not None  # checked
        outputs[name] = src
    inputs = {
        name: TensorSpec(i.dtype, tuple(i.shape), i.optional, i.default)
        for name, i in spec.inputs.items()
    }
    return Plan(
        name=spec.name,
        file=spec.file,
        base_dir=spec.base_dir,
        inputs=inputs,
        outputs=outputs,
        nodes=nodes,
        warnings=tuple(i.format() for i in analysis.issues if i.severity == "warning"),
    )


def topological_order(analysis: Analysis) -> list[str]:
    """Producers before consumers; nodes that could go either way keep their file order."""
    index = {name: i for i, name in enumerate(analysis.spec.nodes)}
    return list(nx.lexicographical_topological_sort(analysis.graph, key=index.__getitem__))


def _placement_request(spec: PipelineSpec, info: NodeInfo) -> PlacementRequest:
    own, defaults = info.spec.placement, spec.defaults.placement

    def pick(field: str, fallback):
        for source in (own, defaults):
            value = getattr(source, field, None) if source is not None else None
            if value is not None:
                return value
        return fallback

    assert info.kind is not None and info.params is not None
    where = f"{spec.file}:{spec.line(f'nodes.{info.name}')}: "
    try:
        memory = int(info.kind.memory_bytes_in(info.params, spec.base_dir))
    except Exception as exc:
        raise PlacementError(f"{where}node {info.name!r}: no memory estimate: {exc}") from exc
    return PlacementRequest(
        node=info.name,
        device=pick("device", "auto"),
        instances=pick("instances", 1),
        devices=tuple(pick("devices", ())),
        memory_bytes=memory,
        where=where,
    )
