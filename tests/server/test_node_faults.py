"""A node that dies is contained, and a queued request is rejected at its own deadline (issue 8,
kinds 1 and 2), against a real server with the `test_fragile` kind (tests/server/fragile_kind.py)
and real KServe clients. A lost streaming instance is restarted the same way: the `test_words`
kind (tests/server/stream_kind.py) raising KeyboardInterrupt, and an llm node whose engine step
thread is killed (tests/server/llm_fault_kind.py)."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    log = tmp_path_factory.mktemp("fragile") / "serve.log"
    files = [str(DATA / "fragile.yaml"), str(DATA / "queued.yaml")]
    srv = start_server(files, "--api-key", API_KEY, log=log, module="tests.server.fragile_kind")
    yield srv
    stop_server(srv)


def _infer(srv, model: str, x: float, timeout_us: int = 0) -> requests.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}
    if timeout_us:
        body["parameters"] = {"timeout": timeout_us}
    url = f"http://{srv.http_url}/v2/models/{model}/infer"
    return requests.post(url, json=body, headers=AUTH, timeout=120)


def _metric(srv, family: str, node: str) -> float:
    text = requests.get(f"http://{srv.http_url}/metrics", headers=AUTH, timeout=30).text
    for line in text.splitlines():
        if line.startswith(family + "{") and f'node="{node}"' in line:
            return float(line.split()[-1])
    raise AssertionError(f"no {family} for node {node}")


def _ready(srv) -> int:
    return requests.get(f"http://{srv.http_url}/v2/health/ready", timeout=30).status_code


def _restarted(srv, node: str, restarts_before: float) -> None:
    """Wait (bounded) until the server is ready again: `node` up, one restart more."""
    deadline = time.monotonic() + 120
    while _ready(srv) != 200:
        assert time.monotonic() < deadline, f"node {node!r} was never restarted"
        time.sleep(0.1)
    assert _metric(srv, "pipectl_node_instances_up", node) == 1
    assert _metric(srv, "pipectl_node_instance_restarts_total", node) == restarts_before + 1


def test_sys_exit_fails_only_its_item_and_the_node_serves_on(fragile):
    with ThreadPoolExecutor(3) as pool:  # within one 50 ms batching window: batch neighbours
        answers = list(pool.map(lambda x: _infer(fragile, "fragile", x), [1.0, -1.0, 2.0]))
    good, bad, other = answers
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [1.0]
    assert other.status_code == 200 and other.json()["outputs"][0]["data"] == [2.0]
    assert bad.status_code == 500
    assert "'boom'" in bad.json()["error"] and "SystemExit" in bad.json()["error"]
    assert _infer(fragile, "fragile", 3.0).json()["outputs"][0]["data"] == [3.0]
    assert _ready(fragile) == 200


def test_a_lost_instance_is_restarted_and_shown_while_down(fragile):
    restarts = _metric(fragile, "pipectl_node_instance_restarts_total", "boom")
    lost = _infer(fragile, "fragile", -2.0)  # its thread dies; the reload takes 5 s
    assert lost.status_code == 500 and "instance 0 was lost" in lost.json()["error"]
    # while it reloads: not ready, 0 instances up, requests refused at once (not left waiting)
    assert _ready(fragile) == 503
    assert _metric(fragile, "pipectl_node_instances_up", "boom") == 0
    refused = _infer(fragile, "fragile", 1.0)
    assert refused.status_code == 503 and "no live instance" in refused.json()["error"]
    _restarted(fragile, "boom", restarts)
    assert _infer(fragile, "fragile", 4.0).json()["outputs"][0]["data"] == [4.0]


def _blocked(srv):
    """A 3 s item holding the only instance of node `wait`; returns its thread once computing."""
    holder = threading.Thread(target=lambda: _infer(srv, "queued", 3000.0))
    holder.start()
    deadline = time.monotonic() + 60
    while True:
        live = requests.get(f"http://{srv.http_url}/v2/stats/live", headers=AUTH, timeout=30)
        queued = _metric(srv, "pipectl_node_queued", "wait")
        if live.json()["server"]["in_flight"] == 1 and queued == 0:
            return holder
        assert time.monotonic() < deadline, "the holding request never reached the node"
        time.sleep(0.02)


@pytest.mark.parametrize("which", ["timeout_ms", "request deadline"])
def test_a_queued_request_is_rejected_at_its_deadline_not_when_the_node_frees(fragile, which):
    holder = _blocked(fragile)
    timeout_us = 300_000 if which == "request deadline" else 0
    answer = _infer(fragile, "queued", 1.0, timeout_us)
    still_blocked = holder.is_alive()  # the 3 s item is still computing: long before it ends
    holder.join(timeout=60)
    assert answer.status_code == 504, answer.text
    words = "timeout_ms=300" if which == "timeout_ms" else "deadline of 0.3 s"
    assert words in answer.json()["error"]
    assert still_blocked
    assert _infer(fragile, "queued", 5.0).json()["outputs"][0]["data"] == [5.0]


@pytest.fixture(scope="module")
def fragile_stream(tmp_path_factory):
    """fragile_words.yaml (a `test_words` node `talk`) whose restart waits for `srv.gate`."""
    root = tmp_path_factory.mktemp("fragile_stream")
    gate = root / "reload.gate"
    pipeline = root / "fragile_words.yaml"
    pipeline.write_text((DATA / "fragile_words.yaml").read_text().replace("GATE", str(gate)))
    srv = start_server([str(pipeline)], "--api-key", API_KEY, log=root / "serve.log",
                       module="tests.server.stream_kind")  # fmt: skip
    srv.gate = gate
    yield srv
    stop_server(srv)


def _say(srv, prompt: str) -> requests.Response:
    body = {"inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": [prompt]}]}
    url = f"http://{srv.http_url}/v2/models/fragile_words/infer"
    return requests.post(url, json=body, headers=AUTH, timeout=120)


def test_a_lost_streaming_instance_fails_its_streams_and_is_restarted(fragile_stream):
    import numpy as np
    import tritonclient.grpc as grpcclient

    srv = fragile_stream
    restarts = _metric(srv, "pipectl_node_instance_restarts_total", "talk")
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=AUTH)
    try:
        prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
        words = " ".join(f"w{i}" for i in range(400))  # 20 s of deltas: still going when lost
        prompt.set_data_from_numpy(np.array([[words.encode()]], dtype=object))
        client.async_stream_infer("fragile_words", [prompt], request_id="long")
        assert responses.get(timeout=60)[1] is None  # under way
        lost = _say(srv, "please DIE now")  # KeyboardInterrupt in the node: the instance is lost
        assert lost.status_code == 500 and "node 'talk' instance 0 was lost" in lost.text
        error = None
        while error is None:  # the stream in flight on that instance fails too, naming the node
            _, error = responses.get(timeout=60)
        assert "node 'talk' instance 0 was lost while computing request 'long'" in str(error)
    finally:
        client.stop_stream()
        client.close()
    # down until the reload (gated) ends: not ready, 0 up, requests refused at once
    assert _ready(srv) == 503
    assert _metric(srv, "pipectl_node_instances_up", "talk") == 0
    refused = _say(srv, "anyone there")
    assert refused.status_code == 503 and "no live instance" in refused.text
    srv.gate.touch()
    _restarted(srv, "talk", restarts)
    answer = _say(srv, "back again")
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == ["echo: back again"]


def test_an_llm_whose_engine_thread_dies_fails_its_streams_and_is_restarted(tmp_path):
    """The LLM engine's step thread killed under two streams: both fail naming the node (they
    used to wait forever), the instance reloads onto a fresh engine, and serving goes on."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    srv = start_server([str(DATA / "dying_llm.yaml")], "--api-key", API_KEY,
                       log=tmp_path / "serve.log", module="tests.server.llm_fault_kind")  # fmt: skip
    try:
        restarts = _metric(srv, "pipectl_node_instance_restarts_total", "generate")
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        responses: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: responses.put((result, error)),
                            headers=AUTH)  # fmt: skip

        def send(text: str, request_id: str) -> None:
            prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
            prompt.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
            limit = grpcclient.InferInput("max_tokens", [1, 1], "INT64")
            limit.set_data_from_numpy(np.array([[400]], dtype=np.int64))
            client.async_stream_infer("dying", [prompt, limit], request_id=request_id)

        try:
            send("Tell me a long story about the sea.", "long")
            first = responses.get(timeout=120)[1]
            assert first is None, first.message()  # under way
            send("Now DIE, please.", "die")
            errors = {}
            while len(errors) < 2:
                _, error = responses.get(timeout=120)
                if error is not None:
                    errors[error.message().split("request '")[1].split("'")[0]] = error.message()
        finally:
            client.stop_stream()
            client.close()
        assert set(errors) == {"long", "die"}
        for request_id, message in errors.items():
            lost = f"node 'generate' instance 0 was lost while computing request '{request_id}'"
            assert lost in message, message
            assert "step loop died" in message or "KeyboardInterrupt" in message, message
        _restarted(srv, "generate", restarts)
        answer = _say_to(srv, "dying", "Hello again")
        assert answer.status_code == 200, answer.text
    finally:
        stop_server(srv)


def _say_to(srv, model: str, prompt: str) -> requests.Response:
    body = {"inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": [prompt]},
                       {"name": "max_tokens", "shape": [1, 1], "datatype": "INT64", "data": [4]}]}  # fmt: skip
    url = f"http://{srv.http_url}/v2/models/{model}/infer"
    return requests.post(url, json=body, headers=AUTH, timeout=120)
