"""Streaming pipelines (decoupled): tritonclient's stream_infer, unary calls that collect the
tokens, Triton's generate_stream, and the OpenAI chat and completion routes, against the
deterministic `test_words` kind (tests/server/stream_kind.py)."""

from __future__ import annotations

import json
import queue
import urllib.request

import numpy as np
import pytest

from tests.server.conftest import API_KEY, AUTH

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
openai = pytest.importorskip("openai")


def _prompt(text: str, max_tokens: int | None = None):
    prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    if max_tokens is None:
        return [prompt]
    limit = grpcclient.InferInput("max_tokens", [1, 1], "INT32")
    limit.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    return [prompt, limit]


@pytest.fixture
def stream(stream_server):
    client = grpcclient.InferenceServerClient(stream_server.grpc_url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=AUTH)
    yield client, responses
    client.stop_stream()
    client.close()


def _until_final(responses: queue.Queue) -> list:
    got = []
    while True:
        result, error = responses.get(timeout=10)
        assert error is None, error
        got.append(result)
        if result.get_response().parameters["triton_final_response"].bool_param:
            return got


@pytest.mark.parametrize("empty_final", [False, True])
def test_stream_infer_sends_token_deltas_then_a_final_response(stream, empty_final):
    client, responses = stream
    client.async_stream_infer(
        "words", _prompt("one two three"), request_id="w1", enable_empty_final_response=empty_final
    )
    got = _until_final(responses)
    assert len(got) >= 4  # "echo:", " one", " two", " three", then the final one
    pieces = [r.as_numpy("text") for r in got if r.as_numpy("text") is not None]
    assert b"".join(p[0, 0] for p in pieces) == b"echo: one two three"
    assert all(r.get_response().id == "w1" for r in got)
    final = got[-1]
    assert final.as_numpy("completion_tokens").tolist() == [[4]]
    assert final.as_numpy("finish_reason").tolist() == [[b"stop"]]
    assert not any(
        r.get_response().parameters["triton_final_response"].bool_param for r in got[:-1]
    )


def test_a_failing_stream_request_is_reported_in_band_and_the_stream_goes_on(stream):
    client, responses = stream
    client.async_stream_infer("words", _prompt("please FAIL now"), request_id="bad")
    errors = []
    while not errors:
        _, error = responses.get(timeout=10)
        if error is not None:
            errors.append(error)
    assert "asked to fail" in str(errors[0]) and "reply" in str(errors[0])
    client.async_stream_infer("words", _prompt("still here"), request_id="good")
    got = _until_final(responses)
    assert got[-1].get_response().id == "good"


def test_unary_infer_collects_the_tokens(stream_server):
    client = grpcclient.InferenceServerClient(stream_server.grpc_url)
    result = client.infer("words", _prompt("a b c d e", max_tokens=3), headers=AUTH)
    assert result.as_numpy("text").tolist() == [[b"echo: a b"]]
    assert result.as_numpy("finish_reason").tolist() == [[b"length"]]
    config = client.get_model_config("words", headers=AUTH).config
    assert config.model_transaction_policy.decoupled


def test_generate_stream_sends_server_sent_events(stream_server):
    request = urllib.request.Request(
        f"http://{stream_server.http_url}/v2/models/words/generate_stream",
        data=json.dumps({"prompt": "x y"}).encode(),
        headers=AUTH,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        lines = response.read().decode().splitlines()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert "".join(e.get("text", "") for e in events) == "echo: x y"
    assert len(events) >= 3 and events[-1]["completion_tokens"] == 3


@pytest.fixture(scope="module")
def oai(stream_server):
    url = f"http://{stream_server.http_url}/v1"
    with openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0) as client:
        yield client


def test_chat_completion(oai):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "red green blue"},
    ]
    reply = oai.chat.completions.create(model="words", messages=messages)
    assert reply.choices[0].message.content == "echo: red green blue"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
    short = oai.chat.completions.create(model="words", messages=messages, max_tokens=2)
    assert short.choices[0].message.content == "echo: red"
    assert short.choices[0].finish_reason == "length"


def test_chat_completion_streamed(oai):
    chunks = list(
        oai.chat.completions.create(
            model="words",
            messages=[{"role": "user", "content": "s t"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: s t"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage.completion_tokens == 3 and not chunks[-1].choices


def test_completions_streamed_and_not(oai):
    done = oai.completions.create(model="words", prompt="p q", max_tokens=8)
    assert done.choices[0].text == "echo: p q" and done.usage.total_tokens == 5
    parts = [
        c.choices[0].text for c in oai.completions.create(model="words", prompt="p q", stream=True)
    ]
    assert "".join(parts) == "echo: p q" and len(parts) >= 3


def test_a_client_that_disconnects_mid_stream_is_not_an_error(stream_server):
    """Closing an SSE stream after the first event frees the request quietly (no traceback in the
    log) and the server keeps serving."""
    import socket
    import time

    host, port = stream_server.http_url.split(":")
    words = " ".join(f"w{i}" for i in range(60))
    body = json.dumps({"prompt": words, "max_tokens": 60}).encode()
    for route in ("/v2/models/words/generate_stream", "/v1/completions"):
        payload = (
            body
            if route.startswith("/v2")
            else json.dumps(
                {"model": "words", "prompt": words, "max_tokens": 60, "stream": True}
            ).encode()
        )
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            received = b""
            for _ in range(50):  # headers and the first event may come in separate reads
                received += sock.recv(4096)
                if b"data: " in received:
                    break
            assert b"data: " in received
    time.sleep(
        1.5
    )  # the stream would still be writing (60 words x 10 ms) when it finds the peer gone
    assert "Error handling request" not in stream_server.log_text()
    test_generate_stream_sends_server_sent_events(stream_server)
