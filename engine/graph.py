"""Checks of a pipeline's graph: every problem at once, each with a code, file:line, path and hint.

Codes (stable; tests and tools match on them):

    E-SPEC-FILE            the file cannot be read
    E-SPEC-EMPTY           the file holds no document
    E-SPEC-YAML            YAML syntax error, or a key that is not a scalar
    E-SPEC-TYPE            the document is not a mapping
    E-SPEC-DUPLICATE-KEY   a key appears twice in one mapping
    E-SPEC-UNKNOWN-FIELD   a key the schema does not know (with "did you mean")
    E-SPEC-MISSING         a required key is missing
    E-SPEC-VALUE           a value of the wrong type or out of range
    E-KIND-UNKNOWN         no node kind by that name (lists the kinds)
    E-KIND-IMPORT          the kind's module failed to import
    E-KIND-PORTS           the kind could not derive its ports from the params
    E-PARAMS-UNKNOWN-FIELD / E-PARAMS-MISSING / E-PARAMS-VALUE   the kind's Params reject the params
    E-GRAPH-BAD-REF        a source that is neither `node.port` nor `$inputs.name`
    E-GRAPH-UNKNOWN-NODE   a source or pipeline output names a node that does not exist
    E-GRAPH-UNKNOWN-OUTPUT a source or pipeline output names a port the node does not output
    E-GRAPH-UNKNOWN-PIPELINE-INPUT  `$inputs.x` where the pipeline declares no input x
    E-GRAPH-UNKNOWN-INPUT  a node wires a port its kind does not take
    E-GRAPH-UNCONNECTED    a required input port is not wired
    E-GRAPH-CYCLE          the nodes form a cycle (printed as a -> b -> a)
    E-GRAPH-DTYPE          an edge joins different dtypes
    E-GRAPH-SHAPE          an edge joins incompatible shapes (-1 matches any size)
    E-BATCH-TOO-LARGE      max_batch_size above what the kind supports
    E-BATCH-PREFERRED      a preferred batch size above max_batch_size
    E-BATCH-PRIORITY       default_priority above priority_levels
    E-PLACEMENT-CONFLICT   `devices` lists a device that `device` excludes
    E-COND-SYNTAX          the `when:` condition does not parse (with its column)
    E-COND-NAME            the condition names something that is not an input port of the node
    E-COND-TYPE            the condition compares values of different types
    W-UNUSED-OUTPUT        no node and no pipeline output reads any output of a node
    W-UNREACHABLE-NODE     no pipeline output depends on a node, so it never runs
    W-UNUSED-INPUT         no node reads a pipeline input
    W-COND-CONSTANT        a condition takes len() of a fixed-shape port (always the same)
    W-DTYPE-BF16-SLOW      dtype bf16 for the CPU, where this CPU runs bf16 slower than fp32
    W-CACHE-NONDETERMINISTIC  response_cache on a pipeline with a node whose results vary, or
                           on a node whose results vary (always, or for some requests)
"""

from __future__ import annotations

import re

import networkx as nx
from pydantic import ValidationError

from engine.analysis import Analysis, NodeInfo
from engine.errors import Issue, suggest
from engine.node_checks import NodeSettingChecks
from engine.plan import PIPELINE_INPUT, Source
from engine.spec import NAME_PATTERN, PipelineSpec, validation_issues
from nodes import registry
from nodes.base import TensorSpec

_NAME = NAME_PATTERN.strip("^$")


def check(spec: PipelineSpec) -> list[Issue]:
    """Every problem of a parsed pipeline, errors and warnings, in file order."""
    return analyze(spec).issues


def parse_ref(text: str) -> Source | None:
    """`node.port` or `$inputs.name` → Source; None when malformed."""
    m = re.fullmatch(rf"(\$inputs|{_NAME})\.({_NAME})", text.strip())
    return Source(m.group(1), m.group(2)) if m else None


class _Checker(NodeSettingChecks):
    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.issues: list[Issue] = []
        self.nodes = {name: NodeInfo(name, node) for name, node in spec.nodes.items()}
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(spec.nodes)

    def add(self, code: str, path: str, message: str, hint: str = "", severity: str = "error"):
        line = self.spec.line(path)
        self.issues.append(Issue(code, message, self.spec.file, line, path, hint, severity))

    def run(self) -> Analysis:
        for info in self.nodes.values():
            self.resolve_kind(info)
        for info in self.nodes.values():
            self.wire(info)
        self.check_outputs()
        self.check_cycles()
        for info in self.nodes.values():
            self.check_batching(info)
            self.check_placement(info)
            self.check_dtype(info)
            self.check_condition(info)
            self.check_node_cache(info)
        self.check_usage()
        self.check_response_cache()
        self.issues.sort(key=lambda i: i.line)
        return Analysis(self.spec, self.nodes, self.graph, self.issues)

    def resolve_kind(self, info: NodeInfo) -> None:
        base = f"nodes.{info.name}"
        try:
            info.kind = registry.get_kind(info.spec.kind)
        except registry.UnknownKind:
            hint = suggest(info.spec.kind, registry.kind_names(), "kinds")
            self.add("E-KIND-UNKNOWN", f"{base}.kind", f"unknown kind {info.spec.kind!r}", hint)
            return
        except ImportError as exc:
            self.add("E-KIND-IMPORT", f"{base}.kind", f"kind {info.spec.kind!r}: {exc}")
            return
        try:
            info.params = info.kind.Params.model_validate(info.spec.params)
        except ValidationError as exc:
            self.issues.extend(
                validation_issues(
                    exc,
                    self.spec.file,
                    self.spec.lines,
                    ("nodes", info.name, "params"),
                    "E-PARAMS",
                    info.kind.Params,
                )
            )
            return
        except Exception as exc:  # noqa: BLE001 - a validator that raised outside pydantic's types
            self.add("E-PARAMS-VALUE", f"{base}.params", f"{info.spec.kind} params: {exc}")
            return
        try:
            info.ports = info.kind.ports_in(info.params, self.spec.base_dir)
        except Exception as exc:  # noqa: BLE001 - a kind bug or params it refuses
            self.add("E-KIND-PORTS", f"{base}.params", f"{info.spec.kind}: {exc}")

    def source_spec(self, src: Source, path: str) -> TensorSpec | None:
        """The TensorSpec a source provides, reporting unknown nodes, ports and inputs."""
        if src.is_pipeline_input:
            if src.port not in self.spec.inputs:
                hint = suggest(src.port, self.spec.inputs, "pipeline inputs")
                self.add(
                    "E-GRAPH-UNKNOWN-PIPELINE-INPUT",
                    path,
                    f"{src}: the pipeline has no input {src.port!r}",
                    hint,
                )
                return None
            i = self.spec.inputs[src.port]
            return TensorSpec(i.dtype, tuple(i.shape), i.optional, i.default)
        producer = self.nodes.get(src.node)
        if producer is None:
            hint = suggest(src.node, self.nodes, "nodes")
            self.add("E-GRAPH-UNKNOWN-NODE", path, f"{src}: there is no node {src.node!r}", hint)
            return None
        if producer.ports is None:
            return None  # its kind or params are wrong: reported already
        out = producer.ports.outputs.get(src.port)
        if out is None:
            hint = suggest(src.port, producer.ports.outputs, f"outputs of {src.node}")
            self.add(
                "E-GRAPH-UNKNOWN-OUTPUT",
                path,
                f"{src}: node {src.node!r} ({producer.spec.kind}) has no output {src.port!r}",
                hint,
            )
        return out

    def wire(self, info: NodeInfo) -> None:
        base = f"nodes.{info.name}.inputs"
        for port, text in info.spec.inputs.items():
            path = f"{base}.{port}"
            src = parse_ref(text)
            if src is None:
                self.add(
                    "E-GRAPH-BAD-REF",
                    path,
                    f"{port}: {text!r} is not a source",
                    "write node.port or $inputs.name",
                )
                continue
            info.sources[port] = src
            if not src.is_pipeline_input and src.node in self.nodes:
                self.graph.add_edge(src.node, info.name, port=port)
            provided = self.source_spec(src, path)
            if provided is not None:
                info.provided[port] = provided
            if info.ports is None:
                continue
            wanted = info.ports.inputs.get(port)
            if wanted is None:
                hint = suggest(port, info.ports.inputs, f"inputs of {info.spec.kind}")
                self.add(
                    "E-GRAPH-UNKNOWN-INPUT",
                    path,
                    f"node {info.name!r} ({info.spec.kind}) has no input {port!r}",
                    hint,
                )
            elif provided is not None:
                self.check_edge(info, port, src, provided, wanted, path)
        if info.ports is not None:
            for port, spec in info.ports.inputs.items():
                if port not in info.spec.inputs and not spec.optional:
                    self.add(
                        "E-GRAPH-UNCONNECTED",
                        f"nodes.{info.name}",
                        f"required input {port!r} of node {info.name!r} is not connected",
                        f"add inputs: {{{port}: <node.port or $inputs.name>}} "
                        f"({spec.dtype} {list(spec.shape)})",
                    )

    def check_edge(self, info, port, src, provided: TensorSpec, wanted: TensorSpec, path) -> None:
        ends = f"{src} ({_fmt(provided)}) -> {info.name}.{port} ({_fmt(wanted)})"
        if provided.dtype != wanted.dtype:
            self.add(
                "E-GRAPH-DTYPE",
                path,
                f"inconsistent dtype: {provided.dtype} from {src}, {wanted.dtype} expected by "
                f"{info.name}.{port}",
                ends,
            )
        elif not shapes_compatible(provided.shape, wanted.shape):
            self.add(
                "E-GRAPH-SHAPE",
                path,
                f"inconsistent shape: {list(provided.shape)} from {src}, "
                f"{list(wanted.shape)} expected by {info.name}.{port}",
                ends,
            )

    def check_outputs(self) -> None:
        for name, text in self.spec.outputs.items():
            path = f"outputs.{name}"
            src = parse_ref(text)
            if src is None:
                self.add(
                    "E-GRAPH-BAD-REF", path, f"{name}: {text!r} is not a source", "write node.port"
                )
            else:
                self.source_spec(src, path)

    def check_cycles(self) -> None:
        order = {n: i for i, n in enumerate(self.nodes)}
        for k, cycle in enumerate(nx.simple_cycles(self.graph)):
            if k == 10:
                break
            start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
            cycle = cycle[start:] + cycle[:start]
            first, last = cycle[0], cycle[-1]
            port = self.graph.edges[last, first]["port"]
            self.add(
                "E-GRAPH-CYCLE",
                f"nodes.{first}.inputs.{port}",
                "cycle: " + " -> ".join([*cycle, first]),
                "a pipeline is acyclic; break the cycle by rewiring one of these inputs",
            )

    def check_response_cache(self) -> None:
        """A response cache applies only where every node is deterministic (the kind says)."""
        if self.spec.response_cache is None:
            return
        varying = [
            name
            for name, info in self.nodes.items()
            if info.kind is not None
            and info.params is not None
            and not info.kind.is_deterministic(info.params, {})
        ]
        if varying:
            self.add(
                "W-CACHE-NONDETERMINISTIC",
                "response_cache",
                f"response_cache cannot apply to every request: node(s) "
                f"{', '.join(map(repr, varying))} may answer the same request differently; only "
                "requests that make them deterministic (an llm with temperature 0 or a seed) "
                "are cached",
                "cache a pipeline of deterministic kinds, or give the llm temperature: 0 or a seed",
                "warning",
            )

    def check_node_cache(self, info: NodeInfo) -> None:
        """A node's response cache applies only where its kind declares it deterministic."""
        if info.spec.response_cache is None or info.kind is None or info.params is None:
            return
        if info.kind.is_deterministic(info.params, {}):
            return
        where = f"nodes.{info.name}.response_cache"
        if info.kind.request_parameters:  # a request may make it deterministic (an llm's seed)
            message = (
                f"response_cache on node {info.name!r} applies only to the requests that make "
                f"its {info.kind.kind!r} results deterministic (temperature 0 or a seed)"
            )
            hint = "give the node temperature: 0 or a seed to cache every request"
        else:
            message = (
                f"response_cache cannot apply to node {info.name!r}: kind {info.kind.kind!r} "
                "does not declare its results deterministic, so nothing is ever cached"
            )
            hint = "remove response_cache from this node, or cache a deterministic node"
        self.add("W-CACHE-NONDETERMINISTIC", where, message, hint, "warning")

    def check_usage(self) -> None:
        consumed = {(s.node, s.port) for i in self.nodes.values() for s in i.sources.values()}
        wanted = [parse_ref(t) for t in self.spec.outputs.values()]
        consumed |= {(s.node, s.port) for s in wanted if s is not None}
        for name in self.spec.inputs:
            if (PIPELINE_INPUT, name) not in consumed:
                self.add(
                    "W-UNUSED-INPUT",
                    f"inputs.{name}",
                    f"no node reads pipeline input {name!r}",
                    severity="warning",
                )
        needed: set[str] = set()
        for src in wanted:
            if src is not None and src.node in self.graph:
                needed |= {src.node} | nx.ancestors(self.graph, src.node)
        for name, info in self.nodes.items():
            if name in needed or info.ports is None:
                continue
            if not any((name, port) in consumed for port in info.ports.outputs):
                outs = ", ".join(info.ports.outputs) or "none"
                self.add(
                    "W-UNUSED-OUTPUT",
                    f"nodes.{name}",
                    f"no node and no pipeline output reads node {name!r} (outputs: {outs})",
                    "wire one of its outputs, or remove the node",
                    "warning",
                )
            else:
                self.add(
                    "W-UNREACHABLE-NODE",
                    f"nodes.{name}",
                    f"node {name!r} never runs: no pipeline output depends on it",
                    severity="warning",
                )


def analyze(spec: PipelineSpec) -> Analysis:
    """Check a spec and keep what was learnt on the way (kinds, params, ports, graph)."""
    return _Checker(spec).run()


def shapes_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Same rank and equal sizes, where -1 matches any size."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _fmt(spec: TensorSpec) -> str:
    return f"{spec.dtype} {list(spec.shape)}"
