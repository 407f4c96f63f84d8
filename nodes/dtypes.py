"""KServe v2 data types and their numpy equivalents. BYTES tensors are numpy object arrays of bytes."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator

KSERVE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# BF16 has no numpy type; it travels as raw 2-byte words (uint16) and is widened by the node that needs it.
KSERVE_TO_NUMPY["BF16"] = np.dtype(np.uint16)

DTYPES = tuple(KSERVE_TO_NUMPY)


def numpy_dtype(kserve: str) -> np.dtype:
    """The numpy dtype that carries a KServe v2 dtype."""
    try:
        return KSERVE_TO_NUMPY[kserve]
    except KeyError:
        raise ValueError(f"unknown dtype {kserve!r}; dtypes: {', '.join(DTYPES)}") from None


def kserve_dtype(dtype: np.dtype) -> str:
    """The KServe v2 name of a numpy dtype (object and bytes/str arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    for name, np_dtype in KSERVE_TO_NUMPY.items():
        if np_dtype == dtype and name != "BF16":
            return name
    raise ValueError(f"numpy dtype {dtype} has no KServe v2 equivalent")


def check_shape(shape: list[int]) -> list[int]:
    """A shape without the batch dimension: positive sizes, or -1 for a variable one."""
    if any(d < -1 or d == 0 for d in shape):
        raise ValueError(f"shape {shape}: dimensions are positive or -1 (variable)")
    return shape


# a shape in a pipeline file or in params, checked by check_shape
Shape = Annotated[list[int], AfterValidator(check_shape)]


def as_bytes_array(values) -> np.ndarray:
    """An object array of bytes from strings or bytes (str is UTF-8 encoded)."""
    arr = np.asarray(values, dtype=object)
    flat = [v.encode() if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(arr.shape)
