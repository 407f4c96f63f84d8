"""A client that leaves a unary request cancels it (issue 8, kind 4): over KServe HTTP, gRPC and
the OpenAI routes, a request still queued behind a busy node is dropped instead of computed,
and an LLM generation stops instead of running to max_tokens."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def linger(tmp_path_factory):
    log = tmp_path_factory.mktemp("linger") / "serve.log"
    srv = start_server([str(DATA / "linger.yaml")], "--api-key", API_KEY, log=log)
    yield srv
    stop_server(srv)


def _metric(http_url: str, family: str, node: str) -> float:
    text = requests.get(f"http://{http_url}/metrics", headers=AUTH, timeout=30).text
    for line in text.splitlines():
        if line.startswith(family + "{") and f'node="{node}"' in line:
            return float(line.split()[-1])
    raise AssertionError(f"no {family} for node {node} in /metrics")


def _settle(srv, timeout_s: float = 60) -> None:
    """Wait (bounded) until no request is in flight and nothing is queued."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = requests.get(f"http://{srv.http_url}/v2/stats/live", headers=AUTH, timeout=30)
        idle = live.json()["server"]["in_flight"] == 0
        if idle and _metric(srv.http_url, "pipectl_node_queued", "wait") == 0:
            return
        assert time.monotonic() < deadline, "the server never became idle"
        time.sleep(0.1)


def _hold_the_instance(srv) -> threading.Thread:
    """A request that keeps the only instance busy for 3 s."""
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}

    def call():
        url = f"http://{srv.http_url}/v2/models/linger/infer"
        assert requests.post(url, json=body, headers=AUTH, timeout=60).status_code == 200

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while not _computing(srv):  # in flight and not queued: inside the node
        assert time.monotonic() < deadline, "the holding request never reached the node"
        time.sleep(0.02)
    return thread


def _computing(srv) -> bool:
    live = requests.get(f"http://{srv.http_url}/v2/stats/live", headers=AUTH, timeout=30).json()
    queued = _metric(srv.http_url, "pipectl_node_queued", "wait")
    return live["server"]["in_flight"] == 1 and queued == 0


def _leave_http(srv) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [2]}]}
    with pytest.raises(requests.Timeout):
        requests.post(
            f"http://{srv.http_url}/v2/models/linger/infer", json=body, headers=AUTH, timeout=0.5
        )


def _leave_grpc(srv) -> None:
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(srv.grpc_url)
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.full((1, 1), 2, dtype=np.float32))
    with pytest.raises(InferenceServerException, match="Deadline"):
        client.infer("linger", [x], headers=AUTH, client_timeout=0.5)
    client.close()


@pytest.mark.parametrize("leave", [_leave_http, _leave_grpc], ids=["http", "grpc"])
def test_a_queued_request_whose_client_left_is_not_computed(linger, leave):
    _settle(linger)
    before = _metric(linger.http_url, "pipectl_node_success_total", "wait")
    holder = _hold_the_instance(linger)
    leave(linger)  # queued behind the 3 s item, then the client goes
    holder.join(timeout=60)
    _settle(linger)  # a left request still computed would be in flight until it is done
    assert _metric(linger.http_url, "pipectl_node_success_total", "wait") == before + 1


def test_a_unary_chat_whose_client_left_stops_generating(server):
    """A non-streaming chat of up to 400 tokens whose client leaves after 1 s: the generation
    is aborted (the node never completes it) and the KV blocks are freed."""
    client = openai.OpenAI(
        base_url=f"http://{server.http_url}/v1", api_key=API_KEY, max_retries=0, timeout=1.0
    )
    done_before = _metric(server.http_url, "pipectl_node_success_total", "generate")
    story = [{"role": "user", "content": "Write a very long story about a dragon and a king."}]
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="chat", messages=story, max_tokens=400)
    deadline = time.monotonic() + 60
    while (
        _metric(server.http_url, "pipectl_llm_running", "generate") > 0
        or _metric(server.http_url, "pipectl_llm_kv_blocks_used", "generate") > 0
    ):
        assert time.monotonic() < deadline, "the abandoned generation kept running"
        time.sleep(0.1)
    # aborted, not completed (a completed generation counts as a node success)
    assert _metric(server.http_url, "pipectl_node_success_total", "generate") == done_before
    again = openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key=API_KEY, max_retries=0)
    reply = again.chat.completions.create(model="chat", messages=story, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
