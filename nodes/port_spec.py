"""Ports declared in params, for kinds whose ports cannot be derived (`python`, `template`).

inputs:
  query: {dtype: BYTES, shape: [1]}
  top_k: {dtype: INT64, shape: [1], optional: true, default: 5}
  passages: BYTES            # shorthand: that dtype, shape [-1]
inputs: [query, passages]    # shorthand: BYTES ports, shape [-1]
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from nodes.base import NodeParams, TensorSpec
from nodes.dtypes import DTYPES, Shape


class PortSpec(NodeParams):
    """One declared port: KServe v2 dtype and shape without the batch dimension."""

    dtype: str
    shape: Shape = Field(default_factory=lambda: [-1])
    optional: bool = False
    default: Any = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}; dtypes: {', '.join(DTYPES)}")
        return value

    def tensor_spec(self) -> TensorSpec:
        return TensorSpec(self.dtype, tuple(self.shape), self.optional, self.default)


def _expand(value: Any) -> Any:
    if isinstance(value, list):  # a list of names: BYTES ports of variable length
        return {name: {"dtype": "BYTES"} for name in value}
    if isinstance(value, dict):
        return {k: ({"dtype": v} if isinstance(v, str) else v) for k, v in value.items()}
    return value


# name → PortSpec; also accepts `name: DTYPE` and a plain list of (BYTES) names
PortMap = Annotated[dict[str, PortSpec], BeforeValidator(_expand)]


def tensor_specs(ports: dict[str, PortSpec]) -> dict[str, TensorSpec]:
    return {name: spec.tensor_spec() for name, spec in ports.items()}
