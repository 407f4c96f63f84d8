"""The contract every node kind meets. Nodes know nothing of the engine: a kind is usable alone.

A kind declares its ports from its params, estimates its memory for placement, loads once per
instance (in that instance's worker thread) and computes whole batches. Items are dicts of port
name → numpy array whose shape excludes the batch dimension; BYTES are object arrays of bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class NodeParams(BaseModel):
    """Base of every kind's Params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TensorSpec:
    """A port's type: KServe v2 dtype and shape without the batch dimension (-1 = variable).
    An optional input may be left unconnected or absent; `default` then stands in."""

    dtype: str
    shape: tuple[int, ...]
    optional: bool = False
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class Ports:
    """The inputs and outputs of one node, as its kind derives them from its params."""

    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)


Item = dict[str, np.ndarray]


class Node:
    """Base class of node kinds. Subclasses set `kind` and `Params` and implement `run_batch`.

    Streaming kinds (the LLM) set `streaming = True`, name the outputs whose deltas are
    concatenated in `stream_outputs`, and implement `stream`; they batch internally.
    `request_parameters` names optional input ports that clients set per request (see
    engine/compiler.py `wire_request_parameters`).
    """

    kind: ClassVar[str] = ""
    Params: ClassVar[type[NodeParams]] = NodeParams
    max_batch_size: ClassVar[int] = 1024  # the largest batch this kind accepts
    streaming: ClassVar[bool] = False
    stream_outputs: ClassVar[tuple[str, ...]] = ()
    # optional input ports that are per-request settings (an LLM's temperature, max_tokens...):
    # left unwired, the compiler wires each to an optional pipeline input of the same name
    request_parameters: ClassVar[tuple[str, ...]] = ()
    # same inputs, same outputs (what a response cache needs); see is_deterministic
    deterministic: ClassVar[bool] = False
    # what a loaded instance holds depends only on its params and the files they name, so that
    # nodes of equal params (in one pipeline or several) may share one set of instances
    shareable: ClassVar[bool] = False

    def __init__(self, params: NodeParams, base_dir: str | Path | None = None):
        self.params = params
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.device = "cpu"

    @classmethod
    def ports(cls, params: NodeParams, base_dir: str | Path | None = None) -> Ports:
        """The node's ports; `base_dir` (the pipeline file's folder) resolves relative paths in
        params, e.g. to read a model's or an index's vector size."""
        raise NotImplementedError(f"{cls.__name__}.ports")

    @classmethod
    def memory_bytes(cls, params: NodeParams, base_dir: str | Path | None = None) -> int:
        """Estimated resident memory of one loaded instance, for placement."""
        return 0

    @classmethod
    def ports_in(cls, params: NodeParams, base_dir: str | Path | None) -> Ports:
        """`ports`, passing `base_dir` to kinds that take it (third-party kinds may not)."""
        if _takes_base_dir(cls.ports):
            return cls.ports(params, base_dir=base_dir)
        return cls.ports(params)

    @classmethod
    def memory_bytes_in(cls, params: NodeParams, base_dir: str | Path | None) -> int:
        """`memory_bytes`, passing `base_dir` to kinds that take it."""
        if _takes_base_dir(cls.memory_bytes):
            return cls.memory_bytes(params, base_dir=base_dir)
        return cls.memory_bytes(params)

    @classmethod
    def is_deterministic(cls, params: NodeParams, overrides: dict) -> bool:
        """Whether equal inputs give equal outputs, with these params and these per-request
        input values (`overrides`: port -> flat array), so that a response cache may serve it."""
        return cls.deterministic

    def load(self, device: str) -> None:
        """Load weights onto `device` ('cpu' or 'cuda:N'); called once, in the instance's worker."""
        self.device = device

    def run_batch(self, items: list[Item]) -> list[Item]:
        """Compute one output dict per input item, in order. Raise to fail the batch; the
        engine splits the batch to isolate a failing item."""
        raise NotImplementedError(f"{type(self).__name__}.run_batch")

    async def stream(self, item: Item) -> AsyncIterator[Item]:
        """Streaming kinds: yield deltas of `stream_outputs`; the last yield also carries the
        other outputs. Closing the iterator early cancels the work (and frees its resources)."""
        raise NotImplementedError(f"{type(self).__name__}.stream")
        yield {}  # pragma: no cover - makes this an async generator

    def close(self) -> None:
        """Release what `load` took."""


def _takes_base_dir(method) -> bool:
    return "base_dir" in inspect.signature(method).parameters
