"""Drawings of a pipeline for `pipectl graph`: plain text for the terminal, Mermaid and DOT for
documents. They read the spec only, so a pipeline with errors can still be drawn; nodes with a
`when:` condition show it (dashed in Mermaid and DOT)."""

from __future__ import annotations

import networkx as nx

from engine.graph import parse_ref
from engine.spec import PipelineSpec


def _order(spec: PipelineSpec) -> list[str]:
    """Nodes producers first (file order among equals); file order when there is a cycle."""
    graph = nx.DiGraph()
    graph.add_nodes_from(spec.nodes)
    for name, node in spec.nodes.items():
        for text in node.inputs.values():
            src = parse_ref(text)
            if src is not None and src.node in spec.nodes:
                graph.add_edge(src.node, name)
    index = {n: i for i, n in enumerate(spec.nodes)}
    try:
        return list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    except nx.NetworkXUnfeasible:
        return list(spec.nodes)


def _edges(spec: PipelineSpec):
    """(source node or None for a pipeline input, source port, consumer, consumer port)."""
    for name, node in spec.nodes.items():
        for port, text in node.inputs.items():
            src = parse_ref(text)
            if src is not None:
                yield (None if src.is_pipeline_input else src.node), src.port, name, port


def to_text(spec: PipelineSpec) -> str:
    """An indented listing: inputs, nodes in order with their wiring and conditions, outputs."""
    lines = [f"pipeline {spec.name}" + (f": {spec.description}" if spec.description else "")]
    if spec.inputs:
        lines.append("inputs")
        width = max(len(n) for n in spec.inputs)
        for name, i in spec.inputs.items():
            optional = "  (optional)" if i.optional else ""
            lines.append(f"  {name:<{width}}  {i.dtype} {list(i.shape)}{optional}")
    lines.append("nodes")
    for name in _order(spec):
        node = spec.nodes[name]
        when = f"   when {node.when}" if node.when else ""
        lines.append(f"  {name} ({node.kind}){when}")
        width = max((len(p) for p in node.inputs), default=0)
        for port, text in node.inputs.items():
            lines.append(f"    {port:<{width}} <- {text}")
    lines.append("outputs")
    width = max((len(n) for n in spec.outputs), default=0)
    for name, text in spec.outputs.items():
        lines.append(f"  {name:<{width}} <- {text}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    for raw, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def to_mermaid(spec: PipelineSpec) -> str:
    """A Mermaid flowchart (left to right); edges are labelled with the ports they join."""
    ids = {name: f"n{i}" for i, name in enumerate(spec.nodes)}
    out = ["flowchart LR"]
    for i, (name, inp) in enumerate(spec.inputs.items()):
        ids[f"$inputs.{name}"] = f"in{i}"
        out.append(f'  in{i}(["{_mermaid_text(name)}<br/>{inp.dtype} {list(inp.shape)}"])')
    conditional = []
    for name in _order(spec):
        node = spec.nodes[name]
        label = f"{_mermaid_text(name)}<br/><i>{_mermaid_text(node.kind)}</i>"
        if node.when:
            label += f"<br/>when {_mermaid_text(node.when)}"
            conditional.append(ids[name])
        out.append(f'  {ids[name]}["{label}"]')
    for i, name in enumerate(spec.outputs):
        out.append(f'  out{i}(["{_mermaid_text(name)}"])')
    for src_node, src_port, name, port in _edges(spec):
        src_id = ids.get(src_node) if src_node else ids.get(f"$inputs.{src_port}")
        if src_id is None:
            continue  # dangling reference: `pipectl validate` reports it
        label = port if src_node is None or src_port == port else f"{src_port} → {port}"
        out.append(f'  {src_id} -->|"{_mermaid_text(label)}"| {ids[name]}')
    for i, (name, text) in enumerate(spec.outputs.items()):
        src = parse_ref(text)
        if src is None:
            continue
        src_id = ids.get(f"$inputs.{src.port}") if src.is_pipeline_input else ids.get(src.node)
        if src_id is not None:
            out.append(f'  {src_id} -->|"{_mermaid_text(src.port)}"| out{i}')
    if conditional:
        out.append("  classDef conditional stroke-dasharray: 5 5")
        out.append(f"  class {','.join(conditional)} conditional")
    return "\n".join(out) + "\n"


def _dot(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(spec: PipelineSpec) -> str:
    """A Graphviz digraph (left to right); conditional nodes are dashed and show their condition."""
    out = [f"digraph {_dot(spec.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for name, inp in spec.inputs.items():
        label = f"{name}\n{inp.dtype} {list(inp.shape)}"
        out.append(f"  {_dot('$inputs.' + name)} [shape=ellipse, label={_dot(label)}];")
    for name in _order(spec):
        node = spec.nodes[name]
        label = f"{name}\n{node.kind}"
        style = ""
        if node.when:
            label += f"\nwhen {node.when}"
            style = ", style=dashed"
        out.append(f"  {_dot(name)} [label={_dot(label)}{style}];")
    for name in spec.outputs:
        out.append(f"  {_dot('$outputs.' + name)} [shape=ellipse, label={_dot(name)}];")
    for src_node, src_port, name, port in _edges(spec):
        if src_node is not None and src_node not in spec.nodes:
            continue
        if src_node is None and src_port not in spec.inputs:
            continue
        source = src_node if src_node is not None else f"$inputs.{src_port}"
        label = port if src_node is None or src_port == port else f"{src_port} -> {port}"
        out.append(f"  {_dot(source)} -> {_dot(name)} [label={_dot(label)}];")
    for name, text in spec.outputs.items():
        src = parse_ref(text)
        if src is None or (not src.is_pipeline_input and src.node not in spec.nodes):
            continue
        source = f"$inputs.{src.port}" if src.is_pipeline_input else src.node
        out.append(f"  {_dot(source)} -> {_dot('$outputs.' + name)} [label={_dot(src.port)}];")
    out.append("}")
    return "\n".join(out) + "\n"
