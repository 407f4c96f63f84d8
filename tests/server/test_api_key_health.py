"""With `--api-key`, health and readiness stay open, as Triton and vLLM leave them and README
says: tritonclient's is_server_live / is_server_ready / is_model_ready over gRPC and HTTP answer
without the key (they used to be UNAUTHENTICATED over gRPC and 401 for /v2/models/X/ready),
while metadata, statistics and inference still need it. The Bearer scheme is matched
case-insensitively (RFC 7235)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.server.conftest import API_KEY

pytestmark = pytest.mark.integration
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _x(module):
    x = module.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return [x]


@pytest.mark.parametrize("module", [grpcclient, httpclient], ids=["grpc", "http"])
def test_health_is_open_and_the_rest_needs_the_key(server, module):
    url = server.grpc_url if module is grpcclient else server.http_url
    client = module.InferenceServerClient(url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("echo") and client.is_model_ready("echo.scale", "1")
        for call in (
            lambda: client.get_model_metadata("echo"),
            lambda: client.get_inference_statistics("echo"),
            lambda: client.infer("echo.scale", _x(module)),
        ):
            with pytest.raises(InferenceServerException) as info:
                call()
            assert "API key" in str(info.value)
        lower = {"authorization": f"bearer {API_KEY}"}
        result = client.infer("echo.scale", _x(module), headers=lower)
        assert result.as_numpy("y").tolist() == [[2.0, 2.0, 2.0, 2.0]]
    finally:
        client.close()


def test_only_the_ready_path_of_a_model_is_open(server):
    base = f"http://{server.http_url}/v2/models"
    assert requests.get(f"{base}/echo/versions/1/ready", timeout=30).status_code == 200
    for path in ("/echo", "/echo/config", "/echo/ready/x", "/echo/stats"):
        assert requests.get(f"{base}{path}", timeout=30).status_code == 401, path
