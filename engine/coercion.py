"""Request tensors at the engine's edge: checking and converting inputs against the pipeline's
declared types, and turning outputs into JSON values."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import InvalidInput
from nodes.base import TensorSpec
from nodes.dtypes import as_bytes_array, numpy_dtype


def coerce_input(name: str, spec: TensorSpec, value: Any) -> np.ndarray:
    """`value` as an array of the declared dtype and shape (no batch dimension); strings become
    UTF-8 bytes for BYTES, safe numeric casts are applied; anything else is InvalidInput."""
    dtype = numpy_dtype(spec.dtype)
    if dtype == object:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
        if arr.dtype != object or any(not isinstance(v, bytes) for v in arr.flat):
            try:
                arr = as_bytes_array(arr)
            except TypeError:
                raise InvalidInput(
                    f"input {name!r} is BYTES but holds {arr.dtype} values that are not text"
                ) from None
    else:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype != dtype:
            if arr.dtype == object or not (
                np.can_cast(arr.dtype, dtype, "same_kind") or arr.dtype.kind in "biu"
            ):
                raise InvalidInput(
                    f"input {name!r} has dtype {arr.dtype} but the pipeline declares {spec.dtype}"
                )
            arr = arr.astype(dtype)
    if len(spec.shape) == 1 and arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, arr.shape, strict=True)
    ):
        raise InvalidInput(
            f"input {name!r} has shape {list(arr.shape)} but the pipeline declares "
            f"{list(spec.shape)} (without the batch dimension)"
        )
    return arr


def default_value(spec: TensorSpec) -> np.ndarray | None:
    """The array an optional port's `default` stands for (None: no default)."""
    if spec.default is None:
        return None
    dtype = numpy_dtype(spec.dtype)
    arr = as_bytes_array(spec.default) if dtype == object else np.asarray(spec.default, dtype)
    if arr.ndim == 0 and len(spec.shape) == 1:
        arr = arr.reshape(1)
    return arr


def to_jsonable(arr: np.ndarray) -> Any:
    """A JSON value for an output: BYTES decode as UTF-8 (invalid bytes replaced)."""
    if arr.dtype == object:
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.flat]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist()
    return arr.tolist()
