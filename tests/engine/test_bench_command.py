"""`pipectl bench` on a pipeline file, in process: levels, the per-node split, JSON and CSV
output, the p99 search, and clear errors for bad arguments."""

from __future__ import annotations

import csv
import io
import json

import pytest

from engine.cli import main

PIPELINE = """\
apiVersion: pipectl/v1
name: twice
inputs: {x: {dtype: FP32, shape: [1]}}
outputs: {y: b.y}
defaults: {batching: {max_batch_size: 8, max_queue_delay_ms: 1}, placement: {device: cpu}}
nodes:
  a:
    kind: python
    params: {function: "fns.py:double", inputs: {x: {dtype: FP32, shape: [1]}}, outputs: {y: {dtype: FP32, shape: [1]}}}
    inputs: {x: $inputs.x}
  b:
    kind: python
    params: {function: "fns.py:double", inputs: {x: {dtype: FP32, shape: [1]}}, outputs: {y: {dtype: FP32, shape: [1]}}}
    inputs: {x: a.y}
"""
FNS = "def double(items):\n    return [{'y': item['x'] * 2} for item in items]\n"
QUICK = ["--duration", "0.5", "--warmup", "0.1", "--no-progress"]


@pytest.fixture
def pipeline(write_pipeline):
    path = write_pipeline(PIPELINE)
    (path.parent / "fns.py").write_text(FNS)
    return path


def _bench(capsys, *args: str) -> tuple[int, str]:
    code = main(["bench", *args])
    return code, capsys.readouterr().out


def test_levels_report_rate_latency_and_the_per_node_split(pipeline, capsys, tmp_path):
    table = tmp_path / "levels.csv"
    code, out = _bench(capsys, str(pipeline), "-c", "1,4", "--input", "x=[1.5]", *QUICK,
                       "-o", "json", "--csv", str(table))  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["model"] == "twice" and not report["streaming"]
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert level["requests"] > 0 and level["errors"] == 0
        assert level["rps"] == level["requests"] / 0.5
        lat = level["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert set(level["nodes"]) == {"a", "b"}
        for node in level["nodes"].values():
            assert node["items"] > 0 and node["batches"] > 0 and node["failures"] == 0
            assert 1 <= node["mean_batch"] <= 8 and node["compute_ms"] > 0
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [r["concurrency"] for r in rows] == ["1", "4"]
    assert float(rows[0]["latency_ms_p99"]) == report["levels"][0]["latency_ms"]["p99"]


def test_table_output(pipeline, capsys):
    code, out = _bench(capsys, str(pipeline), "-c", "2", "--input", "x=[1]", *QUICK)
    assert code == 0
    assert "req/s" in out and "p99 ms" in out
    assert "server side, per node" in out and " a " in out


def test_target_p99_search(pipeline, capsys):
    args = [str(pipeline), "-c", "1,2", "--input", "x=[1]", *QUICK, "-o", "json"]
    code, out = _bench(capsys, *args, "--target-p99-ms", "100000", "--max-concurrency", "8")
    report = json.loads(out)
    assert code == 0 and report["search"]["concurrency"] == 8  # 1, 2, then doubled to 8
    assert [level["concurrency"] for level in report["levels"]] == [1, 2, 4, 8]
    code, out = _bench(capsys, *args, "--target-p99-ms", "0.000001")
    assert code == 2 and json.loads(out)["search"]["concurrency"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "y=1"], "unknown input 'y'; inputs: x"),
        ([], "missing input 'x'"),
        (["--input", "x=[1]", "-c", "0"], "levels must be at least 1"),
        (["--input", "x=abc"], "--input x: 'abc' is not a number"),
        (["--input", "x=[1]", "--duration", "0"], "--duration must be > 0 seconds, not 0.0"),
        (["--input", "x=[1]", "--duration", "nan"], "--duration must be > 0 seconds, not nan"),
        (["--input", "x=[1]", "--warmup", "-3"], "--warmup must be >= 0 seconds, not -3.0"),
        (["--input", "x=[1]", "--target-p99-ms", "-5"], "--target-p99-ms must be > 0 ms"),
        (["--input", "x=[1]", "--max-concurrency", "0"], "--max-concurrency must be >= 1"),
    ],
)
def test_bad_arguments_are_named(pipeline, capsys, args, message):
    assert main(["bench", str(pipeline), *QUICK, *args]) == 1
    assert message in capsys.readouterr().err


def test_input_file_lines_are_checked(pipeline, capsys, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"x": [1]}\n{"inputs": {"x": "text"}}\n')
    assert main(["bench", str(pipeline), *QUICK, "--input-file", str(requests)]) == 1
    assert f"{requests}:2:" in capsys.readouterr().err


def test_a_target_that_is_neither_file_nor_url(capsys):
    assert main(["bench", "127.0.0.1:8001", *QUICK]) == 1
    assert "grpc://HOST:PORT" in capsys.readouterr().err
