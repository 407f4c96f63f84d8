"""`backend: ray` in pipeline files: the fields, what the compiler makes of them, and the refusals,
each naming the node and the field. No cluster is needed to compile."""

from __future__ import annotations

import pytest

from engine.commands.plan import format_plan
from engine.compiler import compile_spec
from engine.errors import PlacementError, SpecError
from engine.placement import GIB, Device
from engine.spec import parse_spec

CPU = [Device("cpu", "cpu", 32 * GIB)]

BASE = """\
apiVersion: pipectl/v1
name: zones
inputs:
  query: {dtype: BYTES, shape: [1]}
outputs: {out: b.text}
defaults:
  placement: {DEFAULTS}
nodes:
  a:
    kind: t_text
    inputs: {text: $inputs.query}
    placement: {A}
  b:
    kind: t_text
    inputs: {text: a.text}
    placement: {B}
"""


def compile_text(defaults="{}", a="{}", b="{}"):
    text = BASE.replace("{DEFAULTS}", defaults).replace("{A}", a).replace("{B}", b)
    return compile_spec(parse_spec(text, "zones.yaml"), devices=CPU)


def test_defaults_and_node_fields_merge_into_ray_resources():
    plan = compile_text(
        defaults="{backend: ray, instances: 2, resources: {num_cpus: 0.5}}",
        a="{resources: {num_cpus: 1, memory: 1073741824, custom: {zone_a: 1}}, max_restarts: 5}",
    )
    a, b = plan.nodes["a"], plan.nodes["b"]
    assert a.backend.is_ray and b.backend.is_ray
    assert a.backend.resource_dict() == {"CPU": 1.0, "memory": float(GIB), "zone_a": 1.0}
    assert a.backend.max_restarts == 5
    assert b.backend.resource_dict() == {"CPU": 0.5}
    assert b.backend.max_restarts == 3  # the default
    assert [i.device for i in a.instances] == ["cpu", "cpu"]
    assert plan.to_dict()["nodes"]["a"]["placement"] == {
        "backend": "ray",
        "resources": {"CPU": 1.0, "memory": float(GIB), "zone_a": 1.0},
        "max_restarts": 5,
    }
    table = format_plan(plan)
    assert "ray CPU=1 memory=1GiB zone_a=1 max_restarts=5" in table
    assert "ray CPU=0.5 max_restarts=3" in table


def test_local_stays_the_default():
    plan = compile_text(b="{backend: ray, resources: {custom: {zone_b: 1}}}")
    assert plan.nodes["a"].backend.name == "local"
    assert plan.nodes["a"].to_dict()["placement"] == {"backend": "local"}
    assert plan.nodes["b"].backend.resource_dict() == {"CPU": 1.0, "zone_b": 1.0}


def test_gpu_resources_pick_the_device_inside_the_actor():
    plan = compile_text(
        a="{backend: ray, resources: {num_gpus: 0.5}}", b="{backend: ray, device: cuda}"
    )
    assert plan.nodes["a"].instances[0].device == "cuda:0"
    assert plan.nodes["b"].backend.resource_dict() == {"CPU": 1.0, "GPU": 1.0}
    assert plan.nodes["b"].instances[0].device == "cuda:0"


@pytest.mark.parametrize(
    ("a", "message"),
    [
        (
            "{resources: {num_cpus: 1}}",
            r"zones.yaml:12: nodes.a.placement.resources applies to backend: ray",
        ),
        (
            "{backend: local, max_restarts: 2}",
            r"nodes.a.placement.max_restarts applies to backend: ray",
        ),
        (
            "{backend: ray, device: 'cuda:1'}",
            r"node 'a': backend ray: device cuda:1 names a local GPU",
        ),
        ("{backend: ray, devices: [cpu]}", r"node 'a': backend ray: `devices` lists local devices"),
        (
            "{backend: ray, device: cpu, resources: {num_gpus: 1}}",
            r"device cpu but resources.num_gpus is 1",
        ),
    ],
)
def test_conflicting_fields_are_refused_by_name(a, message):
    with pytest.raises(PlacementError, match=message):
        compile_text(a=a)


@pytest.mark.parametrize(
    ("a", "path", "text"),
    [
        ("{backend: rey}", "nodes.a.placement.backend", "'local' or 'ray'"),
        (
            "{backend: ray, resources: {num_cpu: 1}}",
            "nodes.a.placement.resources.num_cpu",
            "num_cpus",
        ),
        (
            "{backend: ray, resources: {num_cpus: -1}}",
            "nodes.a.placement.resources.num_cpus",
            "greater than or equal to 0",
        ),
        (
            "{backend: ray, resources: {custom: {GPU: 1}}}",
            "nodes.a.placement.resources.custom",
            "write num_gpus",
        ),
        (
            "{backend: ray, max_restarts: -2}",
            "nodes.a.placement.max_restarts",
            "greater than or equal to -1",
        ),
    ],
)
def test_schema_errors_name_the_field(a, path, text):
    with pytest.raises(SpecError) as info:
        compile_text(a=a)
    (issue,) = info.value.issues
    assert issue.path == path
    assert issue.line == 12
    assert text in issue.message + issue.hint
