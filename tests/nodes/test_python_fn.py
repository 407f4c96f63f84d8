"""The `python` kind: user functions by module or file, declared ports, output conversion."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from nodes.base import TensorSpec
from nodes.errors import InvalidConfig
from nodes.python_fn import PythonNode, PythonParams

STEPS = """
import numpy as np

def shout(items, suffix="!"):
    return [{"text": [t.decode().upper() + suffix for t in item["text"]], "n": len(item["text"])}
            for item in items]

def wrong_count(items):
    return items[:1]

def no_n(items):
    return [{"text": ["x"]} for item in items]
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "steps.py").write_text(textwrap.dedent(STEPS))
    return tmp_path


def make(folder, function: str, **extra) -> PythonNode:
    params = PythonParams.model_validate(
        {
            "function": function,
            "inputs": {"text": {"dtype": "BYTES", "shape": [-1]}},
            "outputs": {"text": "BYTES", "n": {"dtype": "INT64", "shape": [1]}},
            **extra,
        }
    )
    node = PythonNode(params, folder)
    node.load("cpu")
    return node


def texts(*values: bytes) -> dict[str, np.ndarray]:
    return {"text": np.array(values, dtype=object)}


def test_a_file_function_runs_on_the_batch_with_kwargs_and_converted_outputs(folder):
    node = make(folder, "steps.py:shout", kwargs={"suffix": "?"})
    out = node.run_batch([texts(b"a", b"b"), texts(b"c")])
    assert [o["text"].tolist() for o in out] == [[b"A?", b"B?"], [b"C?"]]
    assert out[0]["text"].dtype == object
    assert out[0]["n"].dtype == np.int64 and out[1]["n"].tolist() == 1


def test_a_module_name_resolves_as_import_or_as_a_file_beside_the_pipeline(folder, monkeypatch):
    assert make(folder, "steps:shout").run_batch([texts(b"x")])[0]["text"].tolist() == [b"X!"]
    monkeypatch.syspath_prepend(str(folder))
    node = make(folder.parent, "steps:shout")  # found by import this time
    assert node.run_batch([texts(b"y")])[0]["text"].tolist() == [b"Y!"]


def test_ports_come_from_params_including_the_shorthand():
    params = PythonParams.model_validate(
        {
            "function": "m:f",
            "inputs": ["a", "b"],
            "outputs": {"y": "FP32", "z": {"dtype": "INT8", "shape": [2], "optional": True}},
        }
    )
    ports = PythonNode.ports(params)
    assert ports.inputs == {"a": TensorSpec("BYTES", (-1,)), "b": TensorSpec("BYTES", (-1,))}
    assert ports.outputs["y"] == TensorSpec("FP32", (-1,))
    assert ports.outputs["z"] == TensorSpec("INT8", (2,), optional=True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"function": "no_colon", "outputs": {}}, "expected 'module:function'"),
        ({"function": "m:f", "outputs": {"y": "FP33"}}, "unknown dtype 'FP33'"),
        ({"function": "m:f", "outputs": {"y": {"dtype": "FP32", "shape": [0]}}}, "positive"),
        ({"function": "m:f"}, "outputs"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        PythonParams.model_validate(params)


def test_results_that_break_the_contract_are_errors(folder):
    with pytest.raises(TypeError, match="must return a list of 2 dicts, got 1 results"):
        make(folder, "steps.py:wrong_count").run_batch([texts(b"a"), texts(b"b")])
    with pytest.raises(KeyError, match="returned no output 'n'"):
        make(folder, "steps.py:no_n").run_batch([texts(b"a")])


def test_a_missing_function_or_file_is_named(folder):
    # the pipeline file's mistake: InvalidConfig naming the field, the cause kept
    with pytest.raises(
        InvalidConfig, match="no function 'nope'; functions: no_n, shout, wrong_c"
    ) as e:
        make(folder, "steps.py:nope")
    assert e.value.field == "function" and isinstance(e.value.__cause__, TypeError)
    with pytest.raises(InvalidConfig, match="FileNotFoundError: .*missing.py"):
        make(folder, "missing.py:f")
    with pytest.raises(InvalidConfig, match="ModuleNotFoundError"):
        make(folder, "no_such_module_here:f")
