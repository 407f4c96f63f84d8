"""The `template` kind: sandboxed Jinja, inferred or declared inputs, lists for passages."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engine.compiler import compile_file
from engine.executor import Executor
from engine.placement import GIB, Device
from nodes.base import TensorSpec
from nodes.template import TemplateNode, TemplateParams

PROMPT = """Answer from the passages.
{% for p in passages %}
[{{ loop.index }}] {{ p }}
{% endfor %}
Question: {{ query }}"""


def make(tmp_path=None, **params) -> TemplateNode:
    node = TemplateNode(TemplateParams.model_validate(params), tmp_path)
    node.load("cpu")
    return node


def render(node: TemplateNode, **inputs) -> str:
    return node.run_batch([inputs])[0]["text"][0].decode()


def test_inputs_are_inferred_and_lists_number_their_passages():
    node = make(template=PROMPT)
    assert TemplateNode.ports(node.params).inputs == {
        "passages": TensorSpec("BYTES", (-1,)),
        "query": TensorSpec("BYTES", (-1,)),
    }
    out = TemplateNode.ports(node.params).outputs["text"]
    assert (out.dtype, out.shape) == ("BYTES", (1,))
    text = render(
        node,
        passages=np.array([b"Use open().", b"Files close."], dtype=object),
        query=np.array([b"How to read?"], dtype=object),
    )
    assert (
        text
        == "Answer from the passages.\n[1] Use open().\n[2] Files close.\nQuestion: How to read?"
    )


def test_declared_inputs_give_scalars_and_numbers():
    node = make(
        template='{{ name }} scored {{ "%.2f"|format(score) }}; all: {{ scores|join(",") }}',
        inputs={
            "name": {"dtype": "BYTES", "shape": [1]},
            "score": {"dtype": "FP32", "shape": [1]},
            "scores": {"dtype": "INT64", "shape": [-1]},
        },
    )
    text = render(
        node,
        name=np.array([b"ada"], dtype=object),
        score=np.array([0.5], np.float32),
        scores=np.array([3, 1], np.int64),
    )
    assert text == "ada scored 0.50; all: 3,1"


def test_templates_cannot_reach_python_internals():
    node = make(template="{{ query.__class__.__mro__ }}")
    with pytest.raises(Exception, match="unsafe"):
        render(node, query=np.array([b"x"], dtype=object))
    node = make(template="{{ query.__init__.__globals__ }}")
    with pytest.raises(Exception, match="unsafe"):
        render(node, query=np.array([b"x"], dtype=object))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "exactly one of template and template_file"),
        ({"template": "a", "template_file": "b"}, "exactly one"),
        ({"template": "{% for %}"}, "template line 1"),
        ({"template": "{{ a }} {{ b }}", "inputs": ["a"]}, "uses 'b', which are not inputs"),
        ({"template_file": "p.txt"}, "needs its inputs declared"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        TemplateParams.model_validate(params)


def test_a_template_file_resolves_beside_the_pipeline(tmp_path):
    (tmp_path / "p.txt").write_text("Q: {{ query }}")
    node = make(tmp_path, template_file="p.txt", inputs=["query"])
    assert render(node, query=np.array([b"why"], dtype=object)) == "Q: why"
    (tmp_path / "bad.txt").write_text("{{ other }}")
    with pytest.raises(ValueError, match="uses 'other', which are not inputs; inputs: query"):
        make(tmp_path, template_file="bad.txt", inputs=["query"])


def test_a_template_in_a_pipeline(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        """
apiVersion: pipectl/v1
name: greet
inputs: {name: {dtype: BYTES, shape: [1]}}
outputs: {text: hello.text}
nodes:
  hello:
    kind: template
    params: {template: "Hello, {{ name }}!"}
    inputs: {name: $inputs.name}
"""
    )
    executor = Executor(compile_file(path, devices=[Device("cpu", "cpu", 32 * GIB)]))
    executor.start()
    try:
        result = executor.submit_sync({"name": np.array(["Grace"], dtype=object)})
    finally:
        executor.stop()
    assert result.outputs["text"].tolist() == [b"Hello, Grace!"]
