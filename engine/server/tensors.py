"""KServe v2 tensors ⇄ numpy: raw contents (gRPC `raw_*_contents`, the HTTP binary extension),
typed gRPC `contents`, and JSON `data`.

BYTES tensors are numpy object arrays of bytes; on the wire each element is a 4-byte
little-endian length followed by its bytes. BF16 travels as raw 2-byte words (numpy uint16).
Every decode error is an `InvalidInput` naming the tensor.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from engine.errors import InvalidInput
from nodes.dtypes import DTYPES, numpy_dtype

# typed gRPC contents field per datatype (FP16 and BF16 have none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LEN = struct.Struct("<I")


def check_dtype(name: str, datatype: str) -> np.dtype:
    """The numpy dtype of a wire datatype, or InvalidInput naming the tensor."""
    if datatype not in DTYPES:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; datatypes: {', '.join(DTYPES)}"
        )
    return numpy_dtype(datatype)


def element_count(name: str, shape) -> int:
    """Elements in `shape`; negative dimensions are refused."""
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input {name!r}: shape {list(shape)} has a negative dimension")
        count *= int(dim)
    return count


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements, row-major, each with its 4-byte little-endian length prefix."""
    parts = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """`count` length-prefixed elements from `raw` as a flat object array of bytes."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(f"input {name!r}: BYTES data holds fewer than {count} elements")
        (size,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + size > len(view):
            raise InvalidInput(f"input {name!r}: BYTES element {i} is cut short")
        out[i] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise InvalidInput(
            f"input {name!r}: BYTES data has {len(view) - offset} bytes beyond its {count} elements"
        )
    return out


def from_raw(name: str, datatype: str, shape, raw: bytes | memoryview) -> np.ndarray:
    """A tensor from its raw bytes (row-major; BYTES length-prefixed)."""
    dtype = check_dtype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} bytes of data for {datatype} shape {list(shape)} "
            f"(expected {expected})"
        )
    # copy: frombuffer views are read-only and nodes may hand them to torch
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def to_raw(array: np.ndarray) -> bytes:
    """The raw bytes of a tensor (row-major, little-endian; BYTES length-prefixed)."""
    if array.dtype.kind in ("O", "S", "U"):
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def from_contents(name: str, datatype: str, shape, contents: Any) -> np.ndarray:
    """A tensor from typed gRPC `InferTensorContents`."""
    dtype = check_dtype(name, datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} travels only in raw_input_contents")
    values = getattr(contents, field)
    count = element_count(name, shape)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: {len(values)} values in {field} for shape {list(shape)} "
            f"({count} expected)"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = [bytes(v) for v in values]
        return out.reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def from_json(name: str, datatype: str, shape, data: Any) -> np.ndarray:
    """A tensor from KServe v2 JSON `data` (flat or nested, row-major; BYTES as strings)."""
    dtype = check_dtype(name, datatype)
    count = element_count(name, shape)
    flat = flatten(data)
    if len(flat) != count:
        raise InvalidInput(
            f"input {name!r}: {len(flat)} values in data for shape {list(shape)} ({count} expected)"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        try:
            out[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
        except TypeError:
            raise InvalidInput(f"input {name!r}: BYTES data must be strings") from None
        return out.reshape(shape)
    try:
        return np.asarray(flat, dtype=dtype).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {name!r}: data is not {datatype}: {exc}") from None


def to_json(array: np.ndarray) -> list:
    """A tensor as flat KServe v2 JSON data (BYTES decoded as UTF-8 text)."""
    flat = array.reshape(-1)
    if array.dtype.kind in ("O", "S", "U"):
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes | bytearray) else str(v)
            for v in flat
        ]
    return flat.tolist()


def flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list = []
    for item in data:
        out.extend(flatten(item))
    return out
