"""Pipeline files: the schema, duplicate keys, and file:line on every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec import load_spec, parse_spec, spec_json_schema
from engine.yaml_loader import load_yaml

DATA = Path(__file__).parent.parent / "data"

GOOD = """\
apiVersion: pipectl/v1
name: demo
inputs:
  query: {dtype: BYTES, shape: [1]}
outputs:
  answer: fmt.text
defaults:
  batching: {max_batch_size: 8}
nodes:
  fmt:
    kind: t_text
    params:
      suffix: "!"
    inputs: {text: $inputs.query}
    placement: {device: "cuda:1", instances: 2}
"""


def errors_of(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "p.yaml")
    return info.value.issues


def test_good_file_parses_with_lines_and_folder():
    path = DATA / "pipelines" / "search.yaml"
    spec = load_spec(path)
    assert spec.name == "search"
    assert spec.api_version == "pipectl/v1"
    assert spec.file == str(path)
    assert spec.base_dir == str(path.resolve().parent)
    assert spec.inputs["query"].dtype == "BYTES"
    assert spec.nodes["search"].params == {"k": 3}
    assert spec.line("nodes.search.params") == 20
    assert spec.line("nodes.search.params.k") == 20
    assert spec.line("nodes.format.when") == 26


def test_line_map_falls_back_to_the_nearest_ancestor():
    spec = parse_spec(GOOD)
    assert spec.line("nodes.fmt.params.suffix") == 13
    assert spec.line("nodes.fmt.params.nothing_here") == 12
    assert spec.line("nodes.fmt.placement.device") == 15
    assert spec.nodes["fmt"].placement.device == "cuda:1"


def test_every_duplicate_key_is_reported_with_both_lines():
    text = GOOD.replace("  answer: fmt.text\n", "  answer: fmt.text\n  answer: fmt.length\n")
    text = text.replace("    kind: t_text\n", "    kind: t_text\n    kind: t_embed\n")
    issues = errors_of(text)
    assert [(i.code, i.line) for i in issues] == [
        ("E-SPEC-DUPLICATE-KEY", 7),
        ("E-SPEC-DUPLICATE-KEY", 13),
    ]
    assert "first on line 6" in issues[0].message
    assert issues[1].path == "nodes.fmt.kind"


def test_unknown_field_suggests_the_close_name_and_lists_fields():
    (issue,) = errors_of(GOOD.replace("    placement:", "    placment:"))
    assert issue.code == "E-SPEC-UNKNOWN-FIELD"
    assert issue.line == 15
    assert issue.path == "nodes.fmt.placment"
    assert "did you mean 'placement'" in issue.hint
    assert "batching" in issue.hint


def test_all_schema_errors_come_at_once():
    text = GOOD.replace("apiVersion: pipectl/v1", "apiVersion: pipectl/v2")
    text = text.replace("{max_batch_size: 8}", "{max_batch_size: 0}")
    text = text.replace("dtype: BYTES", "dtype: STRING")
    text = text.replace('device: "cuda:1"', "device: gpu")
    issues = errors_of(text)
    found = {(i.path, i.line) for i in issues}
    assert found == {
        ("apiVersion", 1),
        ("inputs.query.dtype", 4),
        ("defaults.batching.max_batch_size", 8),
        ("nodes.fmt.placement.device", 15),
    }
    assert all(i.code == "E-SPEC-VALUE" for i in issues)
    assert all(i.file == "p.yaml" for i in issues)


def test_missing_fields_point_at_their_parent():
    issues = errors_of("apiVersion: pipectl/v1\nname: x\nnodes:\n  a:\n    params: {}\n")
    assert {(i.code, i.path, i.line) for i in issues} == {
        ("E-SPEC-MISSING", "outputs", 1),
        ("E-SPEC-MISSING", "nodes.a.kind", 4),
    }


def test_bad_names_are_rejected():
    issues = errors_of(GOOD.replace("  fmt:\n", "  f.mt:\n"))
    assert issues[0].path.startswith("nodes.f.mt")
    assert issues[0].line == 10


def test_yaml_syntax_error_has_its_line():
    (issue,) = errors_of("apiVersion: pipectl/v1\nname: [x\noutputs: {}\n")
    assert issue.code == "E-SPEC-YAML"
    assert issue.line >= 2


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text"])
def test_documents_that_are_not_mappings(text):
    (issue,) = errors_of(text)
    assert issue.code in ("E-SPEC-EMPTY", "E-SPEC-TYPE")


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert info.value.issues[0].code == "E-SPEC-FILE"


def test_merge_keys_and_anchors_still_load():
    data, lines = load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert data == {"base": {"x": 1}, "other": {"x": 1, "y": 2}}
    assert lines.line("other.y") == 4


def test_json_schema_names_the_yaml_keys():
    schema = spec_json_schema()
    assert "apiVersion" in schema["properties"]
    assert schema["additionalProperties"] is False
    text = json.dumps(schema)
    assert "max_queue_delay_ms" in text and "when" in text and "cuda" in text


def test_value_errors_carry_a_hint_for_patterns_and_zero_sized_shapes():
    text = GOOD.replace('device: "cuda:1"', "device: gpu").replace("shape: [1]", "shape: [0]")
    issues = {i.path: i for i in errors_of(text)}
    assert issues["nodes.fmt.placement.device"].hint == (
        "devices are auto, cpu, cuda (any GPU) or cuda:N"
    )
    assert "dimensions are positive or -1" in issues["inputs.query.shape"].message


def test_an_input_default_must_fit_its_dtype():
    text = GOOD.replace(
        "  query: {dtype: BYTES, shape: [1]}\n",
        "  query: {dtype: BYTES, shape: [1]}\n  top_k: {dtype: INT64, shape: [1], default: many}\n",
    )
    (issue,) = errors_of(text)
    assert (issue.code, issue.line, issue.path) == ("E-SPEC-VALUE", 5, "inputs.top_k")
    assert issue.message == "inputs.top_k: default 'many' is not a valid INT64 value"
    spec = parse_spec(text.replace("default: many", "default: 5, optional: true"))
    assert spec.inputs["top_k"].default == 5
