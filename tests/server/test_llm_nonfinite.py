"""A non-finite sampling value sent to an llm pipeline over gRPC (stock tritonclient, real server)
is INVALID_ARGUMENT naming the field: `temperature` inf used to be accepted and sampled from a
flat distribution, `repetition_penalty` inf to wipe out every seen token. The server answers a
good request right after."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server.conftest import AUTH

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException


def _input(name: str, value, datatype: str):
    dtype = {"BYTES": object, "FP32": np.float32, "INT64": np.int64}[datatype]
    tensor = grpcclient.InferInput(name, [1, 1], datatype)
    tensor.set_data_from_numpy(np.array([[value]], dtype=dtype))
    return tensor


def _ask(client, *extra):
    inputs = [_input("prompt", b"Hi", "BYTES"), _input("max_tokens", 2, "INT64"), *extra]
    return client.infer("chat", inputs, headers=AUTH, client_timeout=120)


@pytest.mark.parametrize("field", ["temperature", "repetition_penalty"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_sampling_values_are_refused(grpc_client, field, value):
    with pytest.raises(InferenceServerException) as info:
        _ask(grpc_client, _input(field, value, "FP32"))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"field '{field}'" in info.value.message() and "finite" in info.value.message()
    assert _ask(grpc_client).as_numpy("finish_reason")[0, 0] in (b"stop", b"length")
