"""A node that dies is contained, and a queued request is rejected at its own deadline (issue 8,
kinds 1 and 2), against a real server with the `test_fragile` kind (tests/server/fragile_kind.py)
and real KServe clients."""

from __future__ import annotations

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
    deadline = time.monotonic() + 120
    while _ready(fragile) != 200:
        assert time.monotonic() < deadline, "the instance was never restarted"
        time.sleep(0.2)
    assert _metric(fragile, "pipectl_node_instances_up", "boom") == 1
    assert _metric(fragile, "pipectl_node_instance_restarts_total", "boom") == restarts + 1
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
