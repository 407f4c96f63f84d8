"""Triton's response cache on a pipeline and on single nodes, with stock tritonclient against a
real server: a hit is byte-identical to the computed answer, LRU-bounded, counted in
ModelStatistics and /metrics; streamed answers are cached whole; only deterministic requests are
cached. A node's hit skips the node (engine/node_cache.py) and counts under `PIPELINE.NODE`."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    log = tmp_path_factory.mktemp("cache") / "serve.log"
    names = ("cached_embed.yaml", "cached_words.yaml", "node_cached.yaml", "cached_llm.yaml")
    files = [str(DATA / f) for f in names]
    srv = start_server(files, "--api-key", API_KEY, log=log, module="tests.server.stream_kind")
    yield srv
    stop_server(srv)


@pytest.fixture
def client(cached):
    c = grpcclient.InferenceServerClient(cached.grpc_url)
    yield c
    c.close()


def embed(client, text: str, model: str = "cembed") -> np.ndarray:
    x = grpcclient.InferInput("text", [1, 1], "BYTES")
    x.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    out = [grpcclient.InferRequestedOutput("embedding")]
    return client.infer(model, [x], outputs=out, headers=AUTH).as_numpy("embedding")


def inference_stats(client, model: str) -> dict:
    stats = client.get_inference_statistics(model, headers=AUTH, as_json=True)["model_stats"][0]
    return stats["inference_stats"]


def cache_counts(client, model: str) -> tuple[int, int]:
    infer = inference_stats(client, model)
    return (int(infer.get("cache_hit", {}).get("count", 0)),
            int(infer.get("cache_miss", {}).get("count", 0)))  # fmt: skip


def computed(client, node_model: str) -> int:
    """Items the node itself computed (a cache hit is not one)."""
    return int(inference_stats(client, node_model)["success"].get("count", 0))


def stream(server, model: str, name: str, words: str) -> list:
    """One streamed request of `words` in input `name`; every response (or error) it got."""
    responses = []
    c = grpcclient.InferenceServerClient(server.grpc_url)
    c.start_stream(lambda result, error: responses.append(error or result), headers=AUTH)
    prompt = grpcclient.InferInput(name, [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[words.encode()]], dtype=object))
    c.async_stream_infer(model, [prompt], enable_empty_final_response=True)
    c.stop_stream()  # waits for the stream to end
    c.close()
    assert not [r for r in responses if isinstance(r, Exception)]
    return responses


def joined(responses, output: str) -> bytes:
    return b"".join(bytes(r.as_numpy(output).reshape(-1)[0]) for r in responses)


def test_a_hit_is_byte_identical_and_counted(client, cached):
    first = embed(client, "open a file")
    hits, misses = cache_counts(client, "cembed")
    again = embed(client, "open a file")
    assert again.tobytes() == first.tobytes() and again.dtype == first.dtype
    assert cache_counts(client, "cembed") == (hits + 1, misses)
    request = urllib.request.Request(f"http://{cached.http_url}/metrics", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        metrics = response.read().decode()
    assert f'pipectl_cache_hits_total{{model="cembed"}} {float(hits + 1)}' in metrics


def test_least_recently_used_is_evicted(client):
    embed(client, "a")
    embed(client, "b")
    embed(client, "a")  # a is now the most recent: b goes when c comes
    embed(client, "c")
    hits, misses = cache_counts(client, "cembed")
    embed(client, "a")
    assert cache_counts(client, "cembed") == (hits + 1, misses)
    embed(client, "b")
    assert cache_counts(client, "cembed") == (hits + 1, misses + 1)


def test_a_streamed_answer_is_cached_whole(cached):
    first = stream(cached, "cwords", "prompt", "one two three")
    served = stream(cached, "cwords", "prompt", "one two three")
    assert len(first) > 2 and len(served) == 1  # the whole answer in one response
    assert joined(served, "text") == joined(first, "text") == b"echo: one two three"
    assert served[0].as_numpy("completion_tokens").reshape(-1)[0] == 4


def test_a_node_hit_skips_the_node_and_is_byte_identical(client, cached):
    first = embed(client, "open a file", "ncache")
    hits, misses = cache_counts(client, "ncache.encode")
    ran = computed(client, "ncache.encode")
    again = embed(client, "open a file", "ncache")
    assert again.tobytes() == first.tobytes() and again.dtype == first.dtype
    assert cache_counts(client, "ncache.encode") == (hits + 1, misses)
    assert computed(client, "ncache.encode") == ran  # the node did not run again
    assert "cache_hit" not in inference_stats(client, "ncache")  # no pipeline cache
    request = urllib.request.Request(f"http://{cached.http_url}/metrics", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        metrics = response.read().decode()
    assert f'pipectl_cache_hits_total{{model="ncache.encode"}} {float(hits + 1)}' in metrics


def test_a_node_cache_evicts_the_least_recently_used(client):
    for text in ("a", "b", "a", "c"):  # a is more recent than b: b goes when c comes (2 entries)
        embed(client, text, "ncache")
    hits, misses = cache_counts(client, "ncache.encode")
    embed(client, "a", "ncache")
    assert cache_counts(client, "ncache.encode") == (hits + 1, misses)
    embed(client, "b", "ncache")
    assert cache_counts(client, "ncache.encode") == (hits + 1, misses + 1)


def test_a_streaming_node_hit_streams_its_answer_whole(client, cached):
    first = stream(cached, "ncache", "text", "one two three")
    hits = cache_counts(client, "ncache.reply")[0]
    served = stream(cached, "ncache", "text", "one two three")
    assert len(first) > 3 and len(served) == 2  # the whole answer, then the final response
    assert joined(served, "reply") == joined(first, "reply") == b"echo: one two three"
    assert cache_counts(client, "ncache.reply")[0] == hits + 1


def test_an_llm_node_caches_greedy_and_seeded_requests_only(client, cached):
    """Through /v1 with the openai package: the llm node (fed by a template) answers a greedy or
    seeded request it has seen from its cache, word for word; a sampled unseeded one is computed
    and not counted."""
    openai = pytest.importorskip("openai")
    base_url = f"http://{cached.http_url}/v1"
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as oa:

        def complete(**fields):
            return oa.completions.create(model="cllm", prompt="What is the sea?", max_tokens=8,
                                         **fields)  # fmt: skip

        first = complete(temperature=0)
        hits, misses = cache_counts(client, "cllm.generate")
        again = complete(temperature=0)
        assert again.choices[0].text == first.choices[0].text
        assert again.usage.completion_tokens == first.usage.completion_tokens
        assert cache_counts(client, "cllm.generate") == (hits + 1, misses)
        complete(temperature=0.8)  # sampled without a seed: not deterministic, uncounted
        assert cache_counts(client, "cllm.generate") == (hits + 1, misses)
        seeded = complete(temperature=0.8, seed=7)
        assert cache_counts(client, "cllm.generate") == (hits + 1, misses + 1)
        assert complete(temperature=0.8, seed=7).choices[0].text == seeded.choices[0].text
        assert cache_counts(client, "cllm.generate") == (hits + 2, misses + 1)
