"""KServe v2 JSON is RFC 8259 JSON, which has no NaN or Infinity, against a real server: a
`NaN`/`Infinity` literal (or 1e999) in FP32 JSON data is a 400 naming the input, and a
non-finite output value (sent in as binary data) comes back as valid JSON: the strings "NaN",
"Infinity", "-Infinity", which tritonclient reads back as floats. The server used to echo `NaN`
literals, a body JSON.parse, jq and Go refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.server.conftest import AUTH

pytestmark = pytest.mark.integration
import tritonclient.http as httpclient

SCALE = "/v2/models/echo.scale/infer"


def _no_constants(name: str):
    raise AssertionError(f"response holds the non-JSON literal {name}")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_json_numbers_are_refused_by_input(server, literal):
    body = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, %s, 2, 3]}]}'
    url = f"http://{server.http_url}{SCALE}"
    reply = requests.post(url, data=body % literal, headers=AUTH, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "input 'x': value 1 is" in reply.json()["error"]
    good = requests.post(url, data=body % "0", headers=AUTH, timeout=60)
    assert good.json()["outputs"][0]["data"] == [2.0, 0.0, 4.0, 6.0]


def test_non_finite_outputs_stay_valid_json(server, http_client):
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32))
    out = httpclient.InferRequestedOutput("y", binary_data=False)
    result = http_client.infer("echo.scale", [x], outputs=[out], headers=dict(AUTH))
    data = result.get_response()["outputs"][0]["data"]
    assert data == ["NaN", "Infinity", "-Infinity", 3.0]
    y = result.as_numpy("y")
    assert np.isnan(y[0, 0]) and y[0, 1] == np.inf and y[0, 2] == -np.inf and y[0, 3] == 3.0
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                   "parameters": {"binary_data_size": 16}}]}).encode()  # fmt: skip
    tail = np.array([np.nan, 1, 2, 3], dtype=np.float32).tobytes()
    headers = AUTH | {"Inference-Header-Content-Length": str(len(body))}
    reply = requests.post(
        f"http://{server.http_url}{SCALE}", data=body + tail, headers=headers, timeout=60
    )
    assert reply.status_code == 200, reply.text
    parsed = json.loads(reply.content, parse_constant=_no_constants)
    assert parsed["outputs"][0]["data"] == ["NaN", 2.0, 4.0, 6.0]
