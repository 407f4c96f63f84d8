"""Graph checks: every problem at once, each with its code, line, and a hint that carries the fix."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from engine.graph import analyze, check, parse_ref, shapes_compatible
from engine.plan import Source
from engine.spec import load_spec, parse_spec
from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register

DATA = Path(__file__).parent.parent / "data"

HEAD = """\
apiVersion: pipectl/v1
name: t
inputs:
  query: {dtype: BYTES, shape: [1]}
"""


def issues(text: str) -> list:
    return check(parse_spec(HEAD + text, "p.yaml"))


def codes(text: str) -> list[tuple[str, int]]:
    return [(i.code, i.line) for i in issues(text)]


def test_good_pipeline_has_no_issue():
    assert check(load_spec(DATA / "pipelines" / "search.yaml")) == []


def test_unknown_node_and_port_suggest_and_list():
    found = issues(
        """\
outputs: {out: fmt.text, vec: encod.vector}
nodes:
  encode:
    kind: t_embed
    params: {dim: 4}
    inputs: {text: $inputs.query}
  fmt:
    kind: t_text
    inputs: {text: $inputs.querry, prefix: encode.vectr}
"""
    )
    by_code = {i.code: i for i in found}
    assert set(by_code) == {
        "E-GRAPH-UNKNOWN-NODE",
        "E-GRAPH-UNKNOWN-PIPELINE-INPUT",
        "E-GRAPH-UNKNOWN-OUTPUT",
    }
    node = by_code["E-GRAPH-UNKNOWN-NODE"]
    assert (node.line, node.path) == (5, "outputs.vec")
    assert node.hint == "did you mean 'encode'? nodes: encode, fmt"
    port = by_code["E-GRAPH-UNKNOWN-OUTPUT"]
    assert port.line == 13
    assert "did you mean 'vector'? outputs of encode: vector" == port.hint
    assert "did you mean 'query'" in by_code["E-GRAPH-UNKNOWN-PIPELINE-INPUT"].hint


def test_unknown_input_port_and_unconnected_required_input():
    found = issues(
        """\
outputs: {out: fmt.text}
nodes:
  fmt:
    kind: t_text
    inputs: {txt: $inputs.query}
"""
    )
    assert [(i.code, i.line) for i in found] == [
        ("E-GRAPH-UNCONNECTED", 7),
        ("E-GRAPH-UNKNOWN-INPUT", 9),
    ]
    assert "inputs of t_text: count, prefix, text" in found[1].hint
    assert "did you mean 'text'" in found[1].hint
    assert "'text'" in found[0].message and "BYTES [1]" in found[0].hint


def test_edge_types():
    spec = parse_spec(
        """\
apiVersion: pipectl/v1
name: t
inputs:
  query: {dtype: BYTES, shape: [1]}
  vec: {dtype: FP32, shape: [4, 2]}
outputs: {a: fmt.text, b: search.ids}
nodes:
  fmt:
    kind: t_text
    inputs: {text: $inputs.query, count: $inputs.vec}
  search:
    kind: t_topk
    inputs: {vector: $inputs.vec}
""",
        "p.yaml",
    )
    found = check(spec)
    assert [(i.code, i.line) for i in found] == [("E-GRAPH-DTYPE", 10), ("E-GRAPH-SHAPE", 13)]
    assert "FP32 from $inputs.vec, INT64 expected by fmt.count" in found[0].message
    assert "$inputs.vec (FP32 [4, 2]) -> fmt.count (INT64 [1])" == found[0].hint
    assert "[4, 2] from $inputs.vec, [-1] expected by search.vector" in found[1].message


def test_shapes_compatible():
    assert shapes_compatible((4,), (-1,))
    assert shapes_compatible((-1, 3), (5, 3))
    assert not shapes_compatible((4,), (5,))
    assert not shapes_compatible((4,), (4, 1))


def test_parse_ref():
    assert parse_ref("$inputs.query") == Source("$inputs", "query")
    assert parse_ref("a-b.out_1") == Source("a-b", "out_1")
    assert parse_ref("nodot") is None
    assert parse_ref("a.b.c") is None


def test_cycle_prints_its_path():
    found = issues(
        """\
outputs: {out: c.text}
nodes:
  a:
    kind: t_text
    inputs: {text: c.text}
  b:
    kind: t_text
    inputs: {text: a.text}
  c:
    kind: t_text
    inputs: {text: b.text}
  d:
    kind: t_text
    inputs: {text: d.text}
"""
    )
    cycles = [i for i in found if i.code == "E-GRAPH-CYCLE"]
    assert [(i.message, i.line) for i in cycles] == [
        ("cycle: a -> b -> c -> a", 9),
        ("cycle: d -> d", 18),
    ]


def test_unknown_kind_lists_kinds_and_bad_params_cite_the_param_line():
    found = issues(
        """\
outputs: {out: fmt.text, v: enc.vector}
nodes:
  fmt:
    kind: t_txt
    inputs: {text: $inputs.query}
  enc:
    kind: t_embed
    params:
      dim: 0
      colour: red
    inputs: {text: $inputs.query}
"""
    )
    assert [(i.code, i.line) for i in found] == [
        ("E-KIND-UNKNOWN", 8),
        ("E-PARAMS-VALUE", 13),
        ("E-PARAMS-UNKNOWN-FIELD", 14),
    ]
    assert "did you mean 't_text'?" in found[0].hint
    assert "encoder" in found[0].hint and "t_topk" in found[0].hint
    assert found[1].path == "nodes.enc.params.dim"
    assert "fields: dim, memory_mb" in found[2].hint


def test_batching_limits():
    text = """\
outputs: {v: enc.vector, t: fmt.text}
defaults:
  batching: {max_batch_size: 32, preferred_batch_sizes: [4, 8, 32]}
nodes:
  enc:
    kind: t_embed
    params: {dim: 4}
    inputs: {text: $inputs.query}
  fmt:
    kind: t_text
    inputs: {text: $inputs.query}
    batching: {max_batch_size: 128, priority_levels: 2, default_priority: 3}
  fmt2:
    kind: t_text
    inputs: {text: $inputs.query}
    batching: {max_batch_size: 4}
"""
    found = issues(text)
    # enc inherits 32 from defaults, above its 16: clamped, not an error; its inherited
    # preferred sizes stay within the clamped limit
    assert [(i.code, i.line) for i in found if i.severity == "error"] == [
        ("E-BATCH-PREFERRED", 7),  # fmt2's inherited preferred sizes 8 and 32 > its own 4
        ("E-BATCH-PREFERRED", 7),
        ("E-BATCH-TOO-LARGE", 16),
        ("E-BATCH-PRIORITY", 16),
    ]
    assert "above the 64 that kind 't_text' supports" in found[2].message
    assert "'fmt2': preferred batch size 8 is above max_batch_size 4" in found[0].message
    assert "'fmt2': preferred batch size 32 is above max_batch_size 4" in found[1].message
    enc = analyze(parse_spec(HEAD + text)).nodes["enc"].batching
    assert (enc.max_batch_size, enc.preferred_batch_sizes) == (16, (4, 8))


def test_conditions_are_checked_against_the_ports():
    found = issues(
        """\
outputs: {a: a.text, b: b.text, c: c.text}
nodes:
  a:
    kind: t_text
    inputs: {text: $inputs.query}
    when: txt == "x"
  b:
    kind: t_text
    inputs: {text: $inputs.query}
    when: text == 3
  c:
    kind: t_text
    inputs: {text: $inputs.query}
    when: text == = 3
"""
    )
    assert [(i.code, i.line) for i in found] == [
        ("E-COND-NAME", 10),
        ("E-COND-TYPE", 14),
        ("E-COND-SYNTAX", 18),
    ]
    assert "did you mean 'text'" in found[0].hint
    assert "cannot compare text (string) with 3 (number)" in found[1].message
    assert "column 9" in found[2].message


def test_condition_types_come_from_the_source():
    found = issues(
        """\
outputs: {a: fmt.text}
nodes:
  enc:
    kind: t_embed
    params: {dim: 4}
    inputs: {text: $inputs.query}
  search:
    kind: t_topk
    inputs: {vector: enc.vector}
    when: vector > 0
  fmt:
    kind: t_text
    inputs: {text: search.texts}
"""
    )
    cond = [i for i in found if i.code.startswith("E-COND")]
    assert [(i.code, i.line) for i in cond] == [("E-COND-TYPE", 14)]
    assert "vector has several elements" in cond[0].message


def test_warnings_for_unused_outputs_inputs_and_dead_nodes():
    found = issues(
        """\
  spare: {dtype: INT64, shape: [1]}
outputs: {out: fmt.text}
nodes:
  fmt:
    kind: t_text
    inputs: {text: $inputs.query}
  orphan:
    kind: t_text
    inputs: {text: $inputs.query}
  middle:
    kind: t_text
    inputs: {text: $inputs.query}
  sink:
    kind: t_text
    inputs: {text: middle.text}
"""
    )
    assert [(i.code, i.line, i.severity) for i in found] == [
        ("W-UNUSED-INPUT", 5, "warning"),
        ("W-UNUSED-OUTPUT", 11, "warning"),
        ("W-UNREACHABLE-NODE", 14, "warning"),
        ("W-UNUSED-OUTPUT", 17, "warning"),
    ]


def test_placement_conflict():
    found = issues(
        """\
outputs: {out: fmt.text}
nodes:
  fmt:
    kind: t_text
    inputs: {text: $inputs.query}
    placement: {device: cpu, devices: [cpu, "cuda:0"]}
"""
    )
    assert [(i.code, i.line) for i in found] == [("E-PLACEMENT-CONFLICT", 10)]


class _FussyParams(NodeParams):
    path: str = "x"

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        if value == "missing":
            raise FileNotFoundError(f"no such file: {value}")  # not a ValueError: escapes pydantic
        return value


@register
class _FussyNode(Node):
    kind = "t_fussy"
    Params = _FussyParams

    @classmethod
    def ports(cls, params):
        if params.path == "noports":
            raise ValueError("cannot read the ports of noports")
        return Ports(inputs={"text": TensorSpec("BYTES", (1,))}, outputs={})


def test_kinds_that_raise_become_issues():
    found = issues(
        """\
outputs: {out: $inputs.query}
nodes:
  a:
    kind: t_fussy
    params: {path: missing}
    inputs: {text: $inputs.query}
  b:
    kind: t_fussy
    params: {path: noports}
    inputs: {text: $inputs.query}
"""
    )
    errors = [(i.code, i.line, i.message) for i in found if i.severity == "error"]
    assert errors == [
        ("E-PARAMS-VALUE", 9, "t_fussy params: no such file: missing"),
        ("E-KIND-PORTS", 13, "t_fussy: cannot read the ports of noports"),
    ]
