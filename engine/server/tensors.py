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
    """A tensor from typed gRPC `InferTensorContents` (values out of the datatype's range are
    refused, never wrapped)."""
    check_dtype(name, datatype)
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
    return typed_array(name, datatype, list(values)).reshape(shape)


def from_json(name: str, datatype: str, shape, data: Any) -> np.ndarray:
    """A tensor from KServe v2 JSON `data`: flat, or nested exactly as `shape` (row-major).
    Values must be of the datatype's JSON type (BYTES: strings, BOOL: true/false, integers:
    whole numbers in range, floats: numbers in range); nothing is truncated or coerced.
    BF16 has no JSON form (it travels as binary data)."""
    check_dtype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BF16":
        raise InvalidInput(
            f"input {name!r}: BF16 has no JSON form; send it as binary data (binary_data_size)"
        )
    flat = flatten(data)
    if len(flat) != count:
        raise InvalidInput(
            f"input {name!r}: {len(flat)} values in data for shape {list(shape)} ({count} expected)"
        )
    if isinstance(data, list) and flat is not data:
        _check_nesting(name, data, list(shape))
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            bad = next(v for v in flat if not isinstance(v, str))
            raise InvalidInput(
                f"input {name!r}: BYTES data must be strings, got {type(bad).__name__} {bad!r:.40}"
            )
        out = np.empty(count, dtype=object)
        try:
            out[:] = [v.encode() for v in flat]
        except UnicodeEncodeError as exc:  # JSON allows lone surrogates ("\ud800"); UTF-8 not
            raise InvalidInput(
                f"input {name!r}: BYTES data is not valid Unicode text: {exc.reason} "
                f"({exc.object[exc.start : exc.end]!a})"
            ) from None
        return out.reshape(shape)
    return typed_array(name, datatype, flat, from_json=True).reshape(shape)


_JSON_TYPES = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}
_JSON_NAMES = {"b": "true/false", "i": "whole numbers", "u": "whole numbers", "f": "numbers"}


def typed_array(name: str, datatype: str, flat: list, *, from_json: bool = False) -> np.ndarray:
    """A flat array of `datatype` from Python values, refusing values of another type (a bool
    for an integer, a float for an integer, a string for a number) and values out of range.
    `from_json`: the values came from KServe v2 JSON, which is RFC 8259 JSON: it has no NaN or
    Infinity (Python's parser takes those literals, Triton's refuses them), so a non-finite
    value is refused naming the input; gRPC contents and binary data carry them."""
    dtype = numpy_dtype(datatype)
    allowed = _JSON_TYPES[dtype.kind]
    for i, v in enumerate(flat):
        if type(v) not in allowed:
            what = _JSON_NAMES[dtype.kind]
            raise InvalidInput(
                f"input {name!r}: data is not {datatype} ({what}): value {i} is "
                f"{type(v).__name__} {v!r:.40}"
            )
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = (min(flat), max(flat)) if flat else (0, 0)
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidInput(
                f"input {name!r}: value {bad} is out of range for {datatype} "
                f"[{info.min}, {info.max}]"
            )
        return np.asarray(flat, dtype=dtype)
    if dtype.kind == "f":
        try:
            wide = np.asarray(flat, dtype=np.float64)
        except OverflowError:
            raise InvalidInput(f"input {name!r}: a value is out of range for {datatype}") from None
        ok = np.isfinite(wide)
        if from_json and not ok.all():
            i = int(np.argmin(ok))
            raise InvalidInput(
                f"input {name!r}: value {i} is {wide[i]!r}: KServe v2 JSON data takes finite "
                "numbers (RFC 8259 JSON has no NaN or Infinity, and 1e999 is out of range); "
                "send non-finite values as binary data"
            )
        finite = wide[ok]
        limit = float(np.finfo(dtype).max)
        if finite.size and float(np.abs(finite).max()) > limit:
            raise InvalidInput(
                f"input {name!r}: value {float(np.abs(finite).max()):g} is out of range for "
                f"{datatype} (largest {limit:g})"
            )
        return wide.astype(dtype)
    return np.asarray(flat, dtype=dtype)


def _check_nesting(name: str, data: Any, shape: list[int], depth: int = 0) -> None:
    """Nested data must nest exactly as the shape: `len` of each level its dimension."""
    if depth == len(shape):
        if isinstance(data, list):
            raise InvalidInput(f"input {name!r}: data nests deeper than shape {shape}")
        return
    if not isinstance(data, list) or len(data) != shape[depth]:
        got = len(data) if isinstance(data, list) else "a scalar"
        raise InvalidInput(
            f"input {name!r}: nested data does not match shape {shape}: level {depth} has "
            f"{got}, expected {shape[depth]}"
        )
    for part in data:
        _check_nesting(name, part, shape, depth + 1)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def to_json(array: np.ndarray) -> list:
    """A tensor as flat KServe v2 JSON data (BYTES decoded as UTF-8 text). A non-finite float
    becomes the string "NaN", "Infinity" or "-Infinity" (the protobuf JSON mapping's spelling;
    numpy and tritonclient read them back as floats), so the body stays valid JSON."""
    flat = array.reshape(-1)
    if array.dtype.kind in ("O", "S", "U"):
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes | bytearray) else str(v)
            for v in flat
        ]
    values = flat.tolist()
    if array.dtype.kind == "f" and not np.isfinite(flat).all():
        for i in np.flatnonzero(~np.isfinite(flat)).tolist():
            values[i] = _NON_FINITE[repr(values[i])]
    return values


def flatten(data: Any) -> list:
    """Row-major values of flat or nested JSON data (a scalar is one value)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list = []
    for item in data:
        out.extend(flatten(item))
    return out
