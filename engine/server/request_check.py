"""A client request checked against the model it names, before anything is submitted.

Input names (unknown, missing), datatypes and shapes (with the client's batch dimension first,
-1 a variable dimension) and requested output names; every error is an InvalidInput (a 400 /
INVALID_ARGUMENT) naming the model, the input and the node that reads it.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InvalidInput
from engine.server.model import ServedModel


def check_request(
    model: ServedModel, inputs: dict[str, np.ndarray], outputs: list[str] | None
) -> int:
    """Validate names, dtypes and shapes against the model; returns the batch size (the first
    dimension every input shares). Raises InvalidInput naming the model and input."""
    from nodes.dtypes import kserve_dtype

    for name in inputs:
        if name not in model.inputs:
            raise InvalidInput.unknown_input(name, model.inputs, model.name)
    missing = [n for n, s in model.inputs.items() if n not in inputs and not s.optional]
    if missing:
        raise InvalidInput(
            f"model {model.name!r}: missing input {missing[0]!r} "
            f"(read by node {', '.join(model.consumers(missing[0]))})"
        )
    batch = None
    for name, array in inputs.items():
        spec = model.inputs[name]
        if array.dtype != model.numpy_dtypes[name]:
            raise InvalidInput(
                f"{model.where(name)}: datatype {kserve_dtype(array.dtype)}, expected {spec.dtype}"
            )
        shape = array.shape
        if len(shape) != len(spec.shape) + 1 or any(
            w != -1 and w != g for w, g in zip(spec.shape, shape[1:], strict=False)
        ):
            want = ["batch", *spec.shape]
            raise InvalidInput(f"{model.where(name)}: shape {list(shape)}, expected {want}")
        if batch is not None and shape[0] != batch:
            raise InvalidInput(
                f"model {model.name!r}: inputs disagree on the batch size "
                f"({batch} and {shape[0]} for {name!r})"
            )
        batch = shape[0]
    for name in outputs or ():
        if name not in model.outputs:
            raise InvalidInput(
                f"model {model.name!r} has no output {name!r}; outputs: {', '.join(model.outputs)}"
            )
    if not batch:
        raise InvalidInput(f"model {model.name!r}: empty batch")
    return batch
