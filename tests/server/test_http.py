"""The HTTP face: KServe v2 REST with tritonclient.http (binary tensors), plain JSON like curl,
generate, /metrics, and the errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.server.conftest import AUTH

# tritonclient.http writes its own headers into the dict it is given: pass copies of AUTH

pytestmark = pytest.mark.integration
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException


def _call(server, path, body=None, headers=AUTH, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_tritonclient_http_infer_with_binary_data(http_client):
    text = httpclient.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"bin"], [b"ary"]], dtype=object), binary_data=True)
    x = httpclient.InferInput("x", [2, 4], "FP32")
    x.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(2, 4), binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("upper", binary_data=True),
        httpclient.InferRequestedOutput("doubled", binary_data=False),
    ]
    result = http_client.infer("echo", [text, x], outputs=outputs, headers=dict(AUTH))
    assert result.as_numpy("upper").tolist() == [[b"BIN"], [b"ARY"]]
    np.testing.assert_array_equal(result.as_numpy("doubled"), np.arange(8).reshape(2, 4) * 2)
    response = result.get_response()
    kinds = {o["name"]: ("parameters" in o, "data" in o) for o in response["outputs"]}
    assert kinds == {"upper": (True, False), "doubled": (False, True)}
    assert http_client.is_model_ready("echo.upper", headers=dict(AUTH))
    config = http_client.get_model_config("echo", headers=dict(AUTH))
    assert config["platform"] == "ensemble" and len(config["ensemble_scheduling"]["step"]) == 3


def test_json_infer_as_curl_sends_it(server):
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["curl"]},
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]},
        ]
    }
    status, payload, _ = _call(server, "/v2/models/echo/infer", body)
    assert status == 200
    out = {o["name"]: o for o in json.loads(payload)["outputs"]}
    assert out["upper"]["data"] == ["CURL"] and out["length"]["data"] == [4]
    assert out["doubled"]["shape"] == [1, 4] and out["doubled"]["data"] == [2, 4, 6, 8]


def test_generate_and_generate_stream(server):
    status, payload, _ = _call(
        server, "/v2/models/echo/generate", {"text": "gen", "x": [1, 2, 3, 4]}
    )
    assert status == 200
    assert json.loads(payload)["upper"] == "GEN"
    status, payload, headers = _call(
        server, "/v2/models/echo/generate_stream", {"text": "sse", "x": [0, 0, 0, 1]}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in payload.decode().splitlines() if line.startswith("data: ")
    ]
    assert events[-1]["upper"] == "SSE" and events[-1]["doubled"] == [0, 0, 0, 2]


def test_health_metadata_stats_and_index(server):
    assert _call(server, "/v2/health/ready", headers={})[0] == 200  # health needs no key
    status, payload, _ = _call(server, "/v2")
    assert status == 200 and json.loads(payload)["name"] == "pipectl"
    status, payload, _ = _call(server, "/v2/models/echo/versions/1/stats")
    assert status == 200 and json.loads(payload)["model_stats"][0]["name"] == "echo"
    status, payload, _ = _call(server, "/v2/repository/index", {"ready": True})
    assert status == 200 and "guard.slow" in {m["name"] for m in json.loads(payload)}


def test_metrics(server):
    _call(server, "/v2/models/echo/generate", {"text": "m", "x": [1, 1, 1, 1]})
    status, payload, headers = _call(server, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = payload.decode()
    for family in (
        "pipectl_node_success_total",
        "pipectl_node_failure_total",
        "pipectl_node_queue_seconds_total",
        "pipectl_node_compute_seconds_total",
        "pipectl_node_batch_size_bucket",
        "pipectl_requests_success_total",
    ):
        assert f"{family}{{" in text, family
    line = next(
        l for l in text.splitlines() if l.startswith('pipectl_node_success_total{node="upper"')
    )
    assert float(line.split()[-1]) >= 1


def test_http_errors_and_the_server_keeps_serving(server, http_client):
    x = httpclient.InferInput("x", [1, 4], "INT32")
    x.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
    with pytest.raises(InferenceServerException, match="datatype INT32, expected FP32"):
        http_client.infer("echo.scale", [x], headers=dict(AUTH))
    status, payload, _ = _call(server, "/v2/models/nope/infer", {"inputs": []})
    assert status == 404 and "not served" in json.loads(payload)["error"]
    status, payload, _ = _call(server, "/v2/models/echo/infer", raw=b"{not json")
    assert status == 400 and "JSON" in json.loads(payload)["error"]
    status, payload, _ = _call(server, "/v2/models/echo.scale/infer", raw=b" " * (2 << 20))
    assert status == 413 and "too large" in json.loads(payload)["error"]
    status, payload, _ = _call(server, "/v2/models/echo", headers={})
    assert status == 401 and "API key" in json.loads(payload)["error"]
    status, _, _ = _call(server, "/v2/models/echo", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert _call(server, "/v2/models/echo")[0] == 200
