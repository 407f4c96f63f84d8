"""What the checks of a pipeline file learn on the way (engine/graph.py, engine/node_checks.py),
kept for the compiler: per node its kind, params, ports, wiring, batching and condition; the
node graph; every issue."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from engine.condition import Condition
from engine.errors import Issue
from engine.plan import BatchPolicy, Source
from engine.spec import NodeSpec, PipelineSpec
from nodes.base import Node, NodeParams, Ports, TensorSpec


@dataclass
class NodeInfo:
    """What the checks learnt about one node; fields stay None when they could not be derived."""

    name: str
    spec: NodeSpec
    kind: type[Node] | None = None
    params: NodeParams | None = None
    ports: Ports | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    provided: dict[str, TensorSpec] = field(default_factory=dict)  # what each source gives
    batching: BatchPolicy | None = None
    condition: Condition | None = None


@dataclass
class Analysis:
    """The result of checking a spec: per-node facts, the node graph and every issue."""

    spec: PipelineSpec
    nodes: dict[str, NodeInfo]
    graph: nx.DiGraph
    issues: list[Issue]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]
