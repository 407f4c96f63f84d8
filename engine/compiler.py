"""The compiler: the only place that turns a pipeline file into a Plan (ARCHITECTURE §3).

It runs every check, refuses a graph with errors (GraphError listing all of them), orders the
nodes topologically (file order among equals), merges `defaults`, and places the instances.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx

from engine.analysis import Analysis, NodeInfo
from engine.defaults import placement_field
from engine.errors import GraphError, PlacementError
from engine.graph import analyze, parse_ref
from engine.placement import Device, PlacementRequest, inventory, place, ray_backend
from engine.plan import PIPELINE_INPUT, Backend, InstancePlan, NodePlan, Plan, Source
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
    implicit, wired, notes = wire_request_parameters(spec, analysis)
    requests = [_placement_request(spec, analysis.nodes[name]) for name in order]
    backends = {r.node: _backend(spec, analysis.nodes[r.node], r) for r in requests}
    local = [r for r in requests if not backends[r.node][0].is_ray]
    placed = place(local, inventory() if devices is None else devices) if local else {}
    for r in requests:
        backend, device = backends[r.node]
        if backend.is_ray:
            placed[r.node] = tuple(InstancePlan(device, r.memory_bytes) for _ in range(r.instances))
    nodes = {}
    for name in order:
        info = analysis.nodes[name]
        assert None not in (info.kind, info.params, info.ports, info.batching)  # no errors left
        nodes[name] = NodePlan(
            name=name,
            kind=info.spec.kind,
            params=info.params,
            ports=info.ports,
            inputs={**info.sources, **wired.get(name, {})},
            batching=info.batching,
            instances=_with_dtypes(info, placed[name]),
            when=info.spec.when,
            line=spec.line(f"nodes.{name}"),
            streaming=info.kind.streaming,
            stream_outputs=tuple(info.kind.stream_outputs) if info.kind.streaming else (),
            backend=backends[name][0],
            response_cache=_cache_bounds(info.spec.response_cache),
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
    inputs.update(implicit)
    return Plan(
        response_cache=_cache_bounds(spec.response_cache),
        version=spec.version,
        name=spec.name,
        file=spec.file,
        base_dir=spec.base_dir,
        inputs=inputs,
        outputs=outputs,
        nodes=nodes,
        warnings=tuple(i.format() for i in analysis.issues if i.severity == "warning")
        + tuple(notes),
    )


def _cache_bounds(cache) -> tuple[int, int] | None:
    """A `response_cache:` block (pipeline or node) as (max_entries, max_bytes)."""
    return (cache.max_entries, cache.max_bytes) if cache is not None else None


def wire_request_parameters(
    spec: PipelineSpec, analysis: Analysis
) -> tuple[dict[str, TensorSpec], dict[str, dict[str, Source]], list[str]]:
    """Wire each unwired request-parameter port (Node.request_parameters: an LLM's temperature,
    max_tokens, ...) to an optional pipeline input of the same name, so that a client sets it per
    request without the file declaring it. A name the file declares as an input is left to the
    file's wiring. Returns (new pipeline inputs, per node the new wiring, warnings)."""
    implicit: dict[str, TensorSpec] = {}
    wired: dict[str, dict[str, Source]] = {}
    notes: list[str] = []
    for name, info in analysis.nodes.items():
        assert info.kind is not None and info.ports is not None  # no errors left
        for port in info.kind.request_parameters:
            port_spec = info.ports.inputs.get(port)
            if port_spec is None or port in info.sources or port in spec.inputs:
                continue
            given = TensorSpec(port_spec.dtype, port_spec.shape, optional=True,
                               doc=f"request parameter of node {name}: {port_spec.doc}")  # fmt: skip
            known = implicit.get(port)
            if known is not None and (known.dtype, known.shape) != (given.dtype, given.shape):
                notes.append(
                    f"{spec.file}: node {name!r}: request parameter {port!r} is "
                    f"{given.dtype}{list(given.shape)} here but {known.dtype}{list(known.shape)} "
                    "on another node; set it through a declared input"
                )
                continue
            implicit.setdefault(port, given)
            wired.setdefault(name, {})[port] = Source(PIPELINE_INPUT, port)
    return implicit, wired, notes


def _with_dtypes(info: NodeInfo, instances: tuple[InstancePlan, ...]):
    """Each instance with the dtype its kind will compute in there (`auto` resolved by the
    kind's params, nodes/compute_dtype.py), for kinds whose params have `compute_dtype`."""
    resolve = getattr(info.params, "compute_dtype", None)
    if resolve is None:
        return instances
    out = []
    for instance in instances:
        choice = resolve(instance.device)
        out.append(dataclasses.replace(instance, dtype=choice.dtype, dtype_reason=choice.reason))
    return tuple(out)


def topological_order(analysis: Analysis) -> list[str]:
    """Producers before consumers; nodes that could go either way keep their file order."""
    index = {name: i for i, name in enumerate(analysis.spec.nodes)}
    return list(nx.lexicographical_topological_sort(analysis.graph, key=index.__getitem__))


def _placement_request(spec: PipelineSpec, info: NodeInfo) -> PlacementRequest:
    assert info.kind is not None and info.params is not None
    where = f"{spec.file}:{spec.line(f'nodes.{info.name}')}: "
    try:
        memory = int(info.kind.memory_bytes_in(info.params, spec.base_dir))
    except Exception as exc:
        raise PlacementError(f"{where}node {info.name!r}: no memory estimate: {exc}") from exc
    return PlacementRequest(
        node=info.name,
        device=placement_field(spec, info.spec, "device", "auto"),
        instances=placement_field(spec, info.spec, "instances", 1),
        devices=tuple(placement_field(spec, info.spec, "devices", ())),
        memory_bytes=memory,
        where=where,
    )


def _backend(spec: PipelineSpec, info: NodeInfo, request: PlacementRequest) -> tuple[Backend, str]:
    """The node's backend (own placement, then defaults; local when unset) and, for Ray, the
    device inside its actors. Ray-only fields under a local backend are refused by name."""
    own, defaults = info.spec.placement, spec.defaults.placement
    if placement_field(spec, info.spec, "backend", "local") == "local":
        checks = (("nodes." + info.name, own, True), ("defaults", defaults, not _any_ray(spec)))
        for label, block, applies in checks:
            if block is None or not applies:
                continue
            for field in ("resources", "max_restarts"):
                if getattr(block, field) is not None:
                    line = spec.line(f"{label}.placement.{field}")
                    raise PlacementError(
                        f"{spec.file}:{line}: {label}.placement.{field} applies to backend: ray, "
                        f"and node {info.name!r} runs on backend local; set backend: ray or drop it"
                    )
        return Backend(), ""
    resources = placement_field(spec, info.spec, "resources", None)
    restarts = placement_field(spec, info.spec, "max_restarts", None)
    return ray_backend(request, resources, restarts)


def _any_ray(spec: PipelineSpec) -> bool:
    return spec.defaults.placement.backend == "ray" or any(
        n.placement is not None and n.placement.backend == "ray" for n in spec.nodes.values()
    )
