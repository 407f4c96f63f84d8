"""The request path without a network: batch split and stack, node models on the pipeline's
instances, skipped outputs, request checks (in-process, real executor, python nodes)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.compiler import compile_file
from engine.errors import InvalidInput, NotFound, Unavailable
from engine.plan import PIPELINE_INPUT
from engine.server.model import node_plan
from engine.server.repository import Repository
from tests.server.conftest import DATA

COND = """
apiVersion: pipectl/v1
name: cond
inputs:
  x: {dtype: FP32, shape: [1]}
outputs:
  y: pos.y
defaults:
  batching: {max_batch_size: 8, max_queue_delay_ms: 0}
  placement: {device: cpu, instances: 1}
nodes:
  pos:
    kind: python
    params: {function: "fns.py:scale", inputs: {x: {dtype: FP32, shape: [1]}}, outputs: {y: {dtype: FP32, shape: [1]}}}
    inputs: {x: $inputs.x}
    when: x > 0
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelines")
    (folder / "fns.py").write_text((DATA / "fns.py").read_text())
    (folder / "cond.yaml").write_text(COND)
    repo = Repository()
    for path in (DATA / "echo.yaml", folder / "cond.yaml"):
        repo.add(compile_file(path))
    with pytest.raises(Unavailable, match="loading"):
        repo.serving("echo")
    for name in repo.pipelines:
        repo.load(name)
    yield repo
    repo.stop()


def _echo(texts, xs):
    return {
        "text": np.array([[t] for t in texts], dtype=object),
        "x": np.asarray(xs, dtype=np.float32),
    }


def test_node_plan_wires_the_node_to_inputs_named_after_its_ports():
    plan = compile_file(DATA / "echo.yaml")
    sub = node_plan(plan, "length")
    assert sub.name == "echo.length" and list(sub.nodes) == ["length"]
    assert sub.inputs == {"text": plan.nodes["length"].ports.inputs["text"]}
    assert sub.nodes["length"].inputs["text"].node == PIPELINE_INPUT
    assert set(sub.outputs) == {"n"}


def test_batch_split_and_stacked(repo):
    out = asyncio.run(repo.infer("echo", _echo([b"ab", b"c"], [[1, 2, 3, 4], [5, 6, 7, 8]])))
    assert out["upper"].tolist() == [[b"AB"], [b"C"]]
    assert out["length"].tolist() == [[2], [1]]
    assert out["doubled"].shape == (2, 4) and out["doubled"][1, 0] == 10


def test_node_model_shares_the_pipeline_instances(repo):
    out = asyncio.run(repo.infer("echo.length", {"text": np.array([[b"abc"]], dtype=object)}))
    assert out == {"n": np.array([[3]])}
    node_executor = repo.models["echo.length"].executor
    pipeline_executor = repo.models["echo"].executor
    assert node_executor is not pipeline_executor
    assert node_executor.runners["length"] is pipeline_executor.runners["length"]


def test_outputs_skipped_by_a_condition(repo):
    assert asyncio.run(repo.infer("cond", {"x": np.array([[-1.0]], dtype=np.float32)})) == {}
    both = np.array([[1.0], [2.0]], dtype=np.float32)
    assert asyncio.run(repo.infer("cond", {"x": both}))["y"].tolist() == [[2.0], [4.0]]
    mixed = np.array([[1.0], [-1.0]], dtype=np.float32)
    with pytest.raises(InvalidInput, match="produced for some items"):
        asyncio.run(repo.infer("cond", {"x": mixed}))


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({"nope": np.zeros((1, 1))}, None, "has no input 'nope'; inputs: text, x"),
        (
            {"text": np.array([[b"a"]], dtype=object)},
            None,
            "missing input 'x' \\(read by node scale\\)",
        ),
        (_echo([b"a"], [[1, 2, 3]]), None, "shape \\[1, 3\\], expected \\['batch', 4\\]"),
        (_echo([b"a", b"b"], [[1, 2, 3, 4]]), None, "disagree on the batch size"),
        (_echo([b"a"], [[1, 2, 3, 4]]), ["nope"], "has no output 'nope'"),
        (
            {"text": np.empty((0, 1), dtype=object), "x": np.zeros((0, 4), np.float32)},
            None,
            "empty batch",
        ),
    ],
)
def test_request_checks(repo, inputs, outputs, message):
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(repo.infer("echo", inputs, outputs))


def test_unknown_model_and_version(repo):
    with pytest.raises(NotFound, match="models: echo, echo.upper"):
        repo.get("nope")
    with pytest.raises(NotFound, match="version '2'"):
        repo.get("echo", "2")
    assert repo.get("echo", "1").name == "echo"
