"""Triton's response cache on a pipeline, with stock tritonclient against a real server: a hit is
byte-identical to the computed answer, LRU-bounded, counted in ModelStatistics and /metrics;
streamed answers are cached whole; only deterministic requests are cached."""

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
    files = [str(DATA / "cached_embed.yaml"), str(DATA / "cached_words.yaml")]
    srv = start_server(files, "--api-key", API_KEY, log=log, module="tests.server.stream_kind")
    yield srv
    stop_server(srv)


@pytest.fixture
def client(cached):
    c = grpcclient.InferenceServerClient(cached.grpc_url)
    yield c
    c.close()


def embed(client, text: str) -> np.ndarray:
    x = grpcclient.InferInput("text", [1, 1], "BYTES")
    x.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    return client.infer("cembed", [x], headers=AUTH).as_numpy("embedding")


def cache_counts(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, headers=AUTH, as_json=True)["model_stats"][0]
    infer = stats["inference_stats"]
    return (int(infer.get("cache_hit", {}).get("count", 0)),
            int(infer.get("cache_miss", {}).get("count", 0)))  # fmt: skip


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
    def stream(words: str) -> list:
        responses = []
        c = grpcclient.InferenceServerClient(cached.grpc_url)
        c.start_stream(lambda result, error: responses.append(error or result), headers=AUTH)
        prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
        prompt.set_data_from_numpy(np.array([[words.encode()]], dtype=object))
        c.async_stream_infer("cwords", [prompt], enable_empty_final_response=True)
        c.stop_stream()  # waits for the stream to end
        c.close()
        assert not [r for r in responses if isinstance(r, Exception)]
        return responses

    def text(responses) -> bytes:
        return b"".join(bytes(r.as_numpy("text").reshape(-1)[0]) for r in responses)

    computed = stream("one two three")
    served = stream("one two three")
    assert len(computed) > 2 and len(served) == 1  # the whole answer in one response
    assert text(served) == text(computed) == b"echo: one two three"
    assert served[0].as_numpy("completion_tokens").reshape(-1)[0] == 4
