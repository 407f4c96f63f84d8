"""The KServe v2 tensor codec agrees with tritonclient's own (de)serialisers."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InvalidInput
from engine.server import tensors

tc_utils = pytest.importorskip("tritonclient.utils")


def test_bytes_roundtrip_matches_tritonclient():
    arr = np.array([[b"a", b""], ["h\xe9llo", b"\x00\xff" * 300]], dtype=object)
    raw = tensors.to_raw(arr)
    assert raw == tc_utils.serialize_byte_tensor(arr).item()
    back = tensors.from_raw("q", "BYTES", [2, 2], raw)
    assert back.dtype == object and back.shape == (2, 2)
    assert back[1, 0] == "h\xe9llo".encode() and back[1, 1] == b"\x00\xff" * 300
    ours = tensors.from_raw("q", "BYTES", [4], tc_utils.serialize_byte_tensor(arr).item())
    assert list(ours) == list(tc_utils.deserialize_bytes_tensor(raw))


@pytest.mark.parametrize(
    "datatype",
    ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64"],
)
def test_fixed_roundtrip(datatype):
    dtype = tc_utils.triton_to_np_dtype(datatype)
    arr = (
        (np.arange(12).reshape(3, 4) % 2 == 0)
        if datatype == "BOOL"
        else np.arange(12, dtype=dtype).reshape(3, 4)
    )
    raw = tensors.to_raw(arr)
    assert raw == arr.tobytes()
    back = tensors.from_raw("x", datatype, [3, 4], raw)
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable
    np.testing.assert_array_equal(
        tensors.from_json("x", datatype, [3, 4], tensors.to_json(arr)), arr
    )


def test_typed_contents():
    from tritonclient.grpc import service_pb2

    contents = service_pb2.InferTensorContents(fp32_contents=[1.5, 2.5, 3.5, 4.5])
    out = tensors.from_contents("v", "FP32", [2, 2], contents)
    assert out.dtype == np.float32 and out.tolist() == [[1.5, 2.5], [3.5, 4.5]]
    contents = service_pb2.InferTensorContents(bytes_contents=[b"x", b"yz"])
    assert tensors.from_contents("q", "BYTES", [2], contents).tolist() == [b"x", b"yz"]
    with pytest.raises(InvalidInput, match="'v'.*3 values"):
        tensors.from_contents(
            "v", "INT32", [2, 2], service_pb2.InferTensorContents(int_contents=[1, 2, 3])
        )
    with pytest.raises(InvalidInput, match="raw"):
        tensors.from_contents("h", "FP16", [1], contents)


def test_json_nested_and_bytes():
    out = tensors.from_json("m", "INT64", [2, 2], [[1, 2], [3, 4]])
    assert out.tolist() == [[1, 2], [3, 4]]
    q = tensors.from_json("q", "BYTES", [1, 1], ["héllo"])
    assert q[0, 0] == "héllo".encode()
    assert tensors.to_json(q) == ["héllo"]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\x00" * 7, "7 bytes of data for FP32 shape \\[2\\] \\(expected 8\\)"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "fewer than 2 elements"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "cut short"),
        ("BYTES", [1], b"\x01\x00\x00\x00abc", "2 bytes beyond"),
        ("FLOAT", [1], b"", "unknown datatype 'FLOAT'"),
        ("FP32", [-1], b"", "negative dimension"),
    ],
)
def test_bad_raw_names_the_input(datatype, shape, raw, message):
    with pytest.raises(InvalidInput, match=f"input 'x': .*{message}"):
        tensors.from_raw("x", datatype, shape, raw)


def test_bad_json():
    with pytest.raises(InvalidInput, match="3 values in data"):
        tensors.from_json("x", "FP32", [2], [1, 2, 3])
    with pytest.raises(InvalidInput, match="not INT32"):
        tensors.from_json("x", "INT32", [1], ["abc"])
