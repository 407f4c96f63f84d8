"""`pipectl run`: one request in text and JSON, files of requests, streaming, errors."""

from __future__ import annotations

import json

import fns  # noqa: F401 - registers the test_stream kind
import pytest

from engine.cli import main

PIPELINE = """
apiVersion: pipectl/v1
name: t
inputs:
  text: {dtype: BYTES, shape: [1]}
  scale: {dtype: FP32, shape: [-1], optional: true}
outputs: {upper: up.text, n: count.n}
nodes:
  up:
    kind: python
    params:
      function: fns:upper
      inputs: {text: {dtype: BYTES, shape: [1]}}
      outputs: {text: {dtype: BYTES, shape: [1]}}
    inputs: {text: $inputs.text}
  count:
    kind: python
    params:
      function: fns:length
      inputs: {text: {dtype: BYTES, shape: [1]}}
      outputs: {n: {dtype: INT64, shape: [1]}}
    inputs: {text: $inputs.text}
"""

STREAMING = """
apiVersion: pipectl/v1
name: s
inputs: {text: {dtype: BYTES, shape: [1]}}
outputs: {answer: echo.text, n: echo.n}
nodes:
  echo:
    kind: test_stream
    inputs: {text: $inputs.text}
"""


def test_one_request_prints_outputs_and_a_timing_table(write_pipeline, capsys):
    path = write_pipeline(PIPELINE)
    assert main(["run", str(path), "--input", "text=hello world"]) == 0
    out = capsys.readouterr().out
    assert "upper: HELLO WORLD\n" in out and "n: 11\n" in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["node", "queue", "ms", "batch", "compute", "ms"]
    assert [row.split()[0] for row in table[1:3]] == ["up", "count"]
    assert all(row.split()[2] == "1" for row in table[1:3])
    assert table[3].startswith("total ") and table[3].endswith(" ms")


def test_json_output_with_a_subset_and_the_trace(write_pipeline, capsys):
    path = write_pipeline(PIPELINE)
    argv = ["run", str(path), "-i", "text=abc", "--outputs", "n", "-o", "json", "--trace"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["outputs"] == {"n": [3]}
    assert [t["node"] for t in record["trace"]] == ["count"]  # `up` was not needed
    assert set(record["trace"][0]) == {"node", "queue_ms", "batch_size", "compute_ms", "skipped"}


def test_a_file_of_requests_gives_results_in_order(write_pipeline, tmp_path, capsys):
    path = write_pipeline(PIPELINE)
    requests = tmp_path / "requests.jsonl"
    lines = [{"text": f"item {i}"} for i in range(20)] + [{"id": "last", "inputs": {"text": "z"}}]
    requests.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    results = tmp_path / "results.jsonl"
    argv = ["run", str(path), "--input-file", str(requests), "--output", str(results), "-c", "4"]
    assert main(argv) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["id"] for r in records] == [str(i) for i in range(1, 21)] + ["last"]
    assert records[5]["outputs"] == {"upper": ["ITEM 5"], "n": [6]}
    assert records[-1]["outputs"]["upper"] == ["Z"]
    assert "21 requests in" in capsys.readouterr().err


def test_streamed_outputs_print_as_they_come(write_pipeline, capsys):
    path = write_pipeline(STREAMING)
    assert main(["run", str(path), "--input", "text=streamed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: streamed\nn: 8\n")
    assert "echo" in out.split("\n\n", 1)[1]
    assert main(["run", str(path), "--input", "text=ab", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == {"answer": ["ab"], "n": [2]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "nope=1"], "unknown input 'nope'; inputs: text, scale"),
        (["--input", "text"], "expected NAME=VALUE"),
        (["--input", "text=a", "--input", "scale=x"], "'x' is not a number"),
        (["--input", "text=a", "--outputs", "zz"], "unknown output 'zz'; outputs: upper, n"),
        ([], "missing input 'text'"),
        (["--input", "text=a", "--timeout", "-1"], "--timeout must be a number of seconds > 0"),
        (["--input", "text=a", "--timeout", "nan"], "--timeout must be a number of seconds > 0"),
        (["--input", "text=a", "-c", "0"], "--concurrency must be >= 1, not 0"),
    ],
)
def test_bad_requests_are_reported(write_pipeline, capsys, argv, message):
    path = write_pipeline(PIPELINE)
    assert main(["run", str(path), *argv]) == 1
    assert message in capsys.readouterr().err


def test_numeric_lists_and_failures_in_a_file(write_pipeline, tmp_path, capsys):
    path = write_pipeline(
        """
apiVersion: pipectl/v1
name: f
inputs: {x: {dtype: FP32, shape: [1]}}
outputs: {y: f.y}
nodes:
  f:
    kind: python
    params:
      function: fns:fail_on
      inputs: {x: {dtype: FP32, shape: [1]}}
      outputs: {y: {dtype: FP32, shape: [1]}}
    inputs: {x: $inputs.x}
"""
    )
    requests = tmp_path / "r.jsonl"
    requests.write_text('{"x": [1.5]}\n{"x": 13}\n')
    assert main(["run", str(path), "--input-file", str(requests)]) == 1
    captured = capsys.readouterr()
    first, second = (json.loads(line) for line in captured.out.splitlines())
    assert first["outputs"] == {"y": [3.0]}
    assert second["error"]["type"] == "NodeError" and second["error"]["node"] == "f"
    assert "1 failed" in captured.err
