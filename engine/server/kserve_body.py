"""The JSON bodies of KServe v2 REST requests (`infer`, `generate`), checked field by field.

Every field a body may carry is declared here; anything else is refused by name, and a value of
the wrong type is refused with its place (`inputs[0].shape[1]: ...`). What is declared is
honoured: `binary_data_size`, `binary_data`, `binary_data_output`, `priority`, `timeout`.
Fields of Triton's protocol that pipectl does not implement (shared memory, classification,
sequence batching) are refused by name, never ignored. Source: the KServe v2 REST protocol
(kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol) and Triton's
binary tensor and shared memory extensions.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import InvalidInput
from engine.options import RequestOptions

NOT_SUPPORTED = {
    "shared_memory_region": "shared memory is not supported; send the data in the request",
    "shared_memory_byte_size": "shared memory is not supported; send the data in the request",
    "shared_memory_offset": "shared memory is not supported; send the data in the request",
    "classification": "classification outputs are not supported; ask for the output itself",
    "sequence_id": "sequence batching is not supported (pipelines are stateless)",
    "sequence_start": "sequence batching is not supported (pipelines are stateless)",
    "sequence_end": "sequence batching is not supported (pipelines are stateless)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Count = Annotated[int, Field(ge=0)]


class InputParameters(_Strict):
    binary_data_size: Count | None = None


class InputTensor(_Strict):
    name: str
    shape: list[Count]
    datatype: str
    parameters: InputParameters | None = None
    data: Any = None


class OutputParameters(_Strict):
    binary_data: bool | None = None


class RequestedOutput(_Strict):
    name: str
    parameters: OutputParameters | None = None


class RequestParameters(_Strict):
    """priority (1 is highest, 0 the node's default) and timeout (microseconds, 0 = none), as
    Triton's; binary_data_output asks for every output as binary data."""

    priority: Count | None = None
    timeout: Count | None = None
    binary_data_output: bool | None = None

    def options(self, request_id: str = "", traceparent: str | None = None) -> RequestOptions:
        """The RequestOptions of Repository.infer / stream."""
        return RequestOptions.of(
            request_id=request_id,
            priority=self.priority or None,
            timeout_s=self.timeout / 1e6 if self.timeout else None,
            traceparent=traceparent,
        )


class InferRequest(_Strict):
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def parse_infer(body: Any) -> InferRequest:
    """The infer request in `body` (parsed JSON); InvalidInput naming the first bad field."""
    return _parse(InferRequest, body, "infer request")


def parse_parameters(value: Any) -> RequestParameters:
    """The `parameters` object of a generate request."""
    if value is None:
        return RequestParameters()
    return _parse(RequestParameters, value, "parameters", prefix="parameters")


def _parse(model: type[_Strict], body: Any, what: str, prefix: str = ""):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(describe(exc, what, prefix)) from None


def describe(exc: ValidationError, what: str, prefix: str = "") -> str:
    """The first problem of a validation error as `place: what is wrong`."""
    error = exc.errors(include_url=False)[0]
    loc = [prefix] if prefix else []
    for part in error["loc"]:
        loc.append(f"[{part}]" if isinstance(part, int) else f".{part}" if loc else str(part))
    place = "".join(loc) or "the request body"
    last = error["loc"][-1] if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        reason = NOT_SUPPORTED.get(str(last), "unknown field")
        return f"{what}: {place}: {reason}"
    if error["type"] == "missing":
        return f"{what}: {place} is missing"
    got = error.get("input")
    if not error["loc"]:
        return f"{what}: the request body must be a JSON object, got {type(got).__name__}"
    shown = f" (got {type(got).__name__} {got!r:.40})" if error["loc"] else ""
    return f"{what}: {place}: {error['msg']}{shown}"
