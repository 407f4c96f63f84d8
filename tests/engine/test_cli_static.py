"""The static commands: validate, schema, graph, plan — through engine.cli.main and a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.cli import main
from tests.validate_imports import validate_in_fresh_process

ROOT = Path(__file__).parent.parent.parent
GOOD = Path(__file__).parent.parent / "data" / "pipelines" / "search.yaml"
PYTHON = GOOD.with_name("python_steps.yaml")

BAD = """\
apiVersion: pipectl/v1
name: bad
inputs:
  query: {dtype: BYTES, shape: [1]}
outputs: {out: fmt.text}
nodes:
  fmt:
    kind: t_text
    inputs: {text: $inputs.qery}
  spare:
    kind: t_text
    params: {repeat: 99}
    inputs: {text: $inputs.query}
"""


def test_validate_good_file(capsys):
    assert main(["validate", str(GOOD)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{GOOD}: ok, 0 warning(s)" in err


def test_validate_prints_every_problem_of_every_file(capsys, write_pipeline):
    bad = write_pipeline(BAD)
    worse = write_pipeline("apiVersion: pipectl/v1\nname: x\nname: y\n", "worse.yaml")
    assert main(["validate", str(GOOD), str(bad), str(worse)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        (
            f"{bad}:9: E-GRAPH-UNKNOWN-PIPELINE-INPUT $inputs.qery: the pipeline has no input 'qery' "
            "(did you mean 'query'? pipeline inputs: query)"
        ),
        f"{bad}:12: E-PARAMS-VALUE repeat: Input should be less than or equal to 8 (got 99)",
        (
            f"{worse}:3: E-SPEC-DUPLICATE-KEY duplicate key 'name' (first on line 2) "
            "(each key may appear once per mapping; remove or rename one)"
        ),
    ]


def test_validate_json_and_strict(capsys, write_pipeline):
    text = BAD.replace("$inputs.qery", "$inputs.query").replace("repeat: 99", "repeat: 2")
    path = write_pipeline(text)
    assert main(["validate", "-o", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True
    (issue,) = report["files"][0]["issues"]
    assert issue["code"] == "W-UNUSED-OUTPUT"
    assert (issue["line"], issue["severity"], issue["path"]) == (10, "warning", "nodes.spare")
    assert main(["validate", "--strict", str(path)]) == 1


def test_schema_command(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "pipectl pipeline file"
    assert set(schema["required"]) >= {"apiVersion", "name", "outputs"}


def test_graph_command_formats(capsys):
    assert main(["graph", str(GOOD)]) == 0
    text = capsys.readouterr().out
    assert 'format (t_text)   when count > 0 and text != "skip"' in text
    assert main(["graph", str(GOOD), "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR")
    assert 'n1 -->|"count"| n2' in mermaid and "class n2 conditional" in mermaid
    assert main(["graph", str(GOOD), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert (
        '"format" [label="format\\nt_text\\nwhen count > 0 and text != \\"skip\\"", style=dashed]'
        in dot
    )
    assert '"search" -> "format" [label="count"];' in dot


LLM = Path(__file__).parent.parent / "server" / "data" / "llm.yaml"


def test_plan_shows_an_llm_node_threads_and_weights(capsys, tmp_path):
    path = tmp_path / "chat.yaml"
    path.write_text(LLM.read_text().replace("max_tokens: 16", "threads: 0, quantization: int4"))
    assert main(["plan", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, row = lines[4].split(), lines[5]
    assert header[7:10] == ["threads", "dtype", "weights"]
    # the inputs the file wires are listed; the request parameters the compiler wires to
    # implicit pipeline inputs (top_p, seed...) are counted
    assert "max_tokens<-$inputs.max_tokens" in row and "stop<-$inputs.stop, +11 request" in row
    assert "top_p<-" not in row
    device, count, threads, _dtype, weights = row.split("parameters")[1].split()[2:7]
    assert (device, count, threads, weights) == ("cpu", "x1", "all", "int4")


def test_plan_shows_threads_left_to_the_default_as_all(capsys):
    """The encoder's `threads: null` (torch's default) computes on every core, as `0` does."""
    assert main(["plan", str(ROOT / "pipelines" / "search.yaml")]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[4:7]}
    assert rows["encode"][7] == "all" and rows["search"][7] == "1"  # search.yaml: threads: 1


def test_graph_of_a_broken_pipeline_still_draws(capsys, write_pipeline):
    assert main(["graph", str(write_pipeline(BAD))]) == 1
    out, err = capsys.readouterr()
    assert "spare (t_text)" in out
    assert "E-GRAPH-UNKNOWN-PIPELINE-INPUT" in err


def test_plan_command(capsys, write_pipeline):
    assert main(["plan", str(GOOD)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"pipeline search ({GOOD})"
    header = lines[4].split()
    assert header == [
        "node",
        "kind",
        "inputs",
        "batch",
        "delay",
        "ms",
        "instances",
        "threads",
        "dtype",
        "weights",
        "memory",
        "backend",
        "when",
    ]
    assert lines[5].split()[:5] == ["encode", "t_embed", "text<-$inputs.query", "8", "2"]
    assert "100.0 MiB" in lines[5]
    assert lines[5].split()[-1] == "local"
    assert main(["plan", "-o", "json", str(GOOD)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert list(plan["nodes"]) == ["encode", "search", "format"]
    assert plan["nodes"]["format"]["when"] == 'count > 0 and text != "skip"'
    assert main(["plan", str(write_pipeline(BAD))]) == 1
    assert "E-PARAMS-VALUE" in capsys.readouterr().err


def test_validate_in_a_fresh_process_does_not_import_torch(write_pipeline):
    bad = write_pipeline(BAD)
    on_ray = write_pipeline(
        PYTHON.read_text().replace("nodes:", "defaults: {placement: {backend: ray}}\nnodes:"),
        "on_ray.yaml",
    )
    (on_ray.parent / "steps.py").write_text(PYTHON.with_name("steps.py").read_text())
    files = [str(GOOD), str(PYTHON), str(on_ray), str(bad)]
    proc = validate_in_fresh_process(
        files, "import runpy\nrunpy.run_path('tests/engine/static_kinds.py')\n"
    )
    assert proc.returncode == 1, proc.stderr
    assert "heavy: []" in proc.stdout
    assert f"{bad}:9: E-GRAPH-UNKNOWN-PIPELINE-INPUT" in proc.stdout
    assert f"{PYTHON}: ok, 0 warning(s)" in proc.stderr
    assert f"{on_ray}: ok, 0 warning(s)" in proc.stderr
    schema = subprocess.run(
        [sys.executable, "-m", "engine.cli", "schema"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert schema.returncode == 0 and '"apiVersion"' in schema.stdout


def test_validating_the_shipped_pipelines_loads_no_model_library():
    """Every real kind (encoder, faiss_search, rerank, llm, template, python) validates without
    torch, faiss, onnxruntime, transformers or grpc, so `pipectl validate` starts fast."""
    files = sorted(str(p) for p in (ROOT / "pipelines").glob("*.yaml"))
    proc = validate_in_fresh_process(files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "heavy: []" in proc.stdout
