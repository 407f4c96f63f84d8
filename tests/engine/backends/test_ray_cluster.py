"""Checking a plan's Ray nodes against a cluster's resources (as ray.nodes() and
ray.cluster_resources() report them): the refusal names the node, the resource and the numbers."""

from __future__ import annotations

import pytest

from engine.backends.ray_cluster import check_resources
from engine.compiler import compile_spec
from engine.errors import PlacementError
from engine.placement import GIB, Device
from engine.spec import parse_spec

PIPELINE = """\
apiVersion: pipectl/v1
name: zones
inputs: {query: {dtype: BYTES, shape: [1]}}
outputs: {out: b.text}
defaults: {placement: {backend: ray}}
nodes:
  a: {kind: t_text, inputs: {text: $inputs.query}, placement: {instances: INSTANCES, resources: {custom: {zone_a: 1}}}}
  b: {kind: t_text, inputs: {text: a.text}, placement: {resources: {num_cpus: 0.5, custom: {zone_b: 1}}}}
"""
A = {"CPU": 1.0, "zone_a": 1.0, "memory": 8.0 * GIB, "node:10.0.0.1": 1.0}
B = {"CPU": 1.0, "zone_b": 1.0, "memory": 8.0 * GIB, "object_store_memory": 1e9}
TOTAL = {"CPU": 2.0, "zone_a": 1.0, "zone_b": 1.0, "memory": 16.0 * GIB}


def nodes(instances: int = 1):
    text = PIPELINE.replace("INSTANCES", str(instances))
    plan = compile_spec(parse_spec(text, "zones.yaml"), devices=[Device("cpu", "cpu", GIB)])
    return list(plan.nodes.values())


def test_a_plan_that_fits_passes():
    check_resources(nodes(), TOTAL, [A, B])


def test_an_instance_no_ray_node_can_hold_is_refused_with_the_nodes():
    with pytest.raises(PlacementError) as info:
        check_resources(nodes(), {"CPU": 2.0, "zone_a": 1.0}, [A, {"CPU": 1.0}], "zones.yaml")
    message = str(info.value)
    assert message.startswith("zones.yaml: node 'b' (backend ray) asks for {CPU 0.5, zone_b 1}")
    assert "no Ray node has that much zone_b" in message
    assert "memory 8.00 GiB" in message and "node:10.0.0.1" not in message


def test_more_instances_than_the_cluster_holds_are_refused_with_the_totals():
    with pytest.raises(PlacementError, match=r"node 'a' \(backend ray, 2 instances of \{CPU 1, zone_a 1\}\): "
                       r"the pipeline's Ray nodes need zone_a 2 in all and the cluster has 1"):  # fmt: skip
        check_resources(nodes(instances=2), TOTAL, [A, B])
