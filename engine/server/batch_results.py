"""A client batch and its per-item results: each item of a client request runs as its own
executor request (engine/server/repository.py); their outputs are stacked back into batched
tensors here, a stream's events joined into one response, and failures typed.
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

import numpy as np

from engine.errors import InvalidInput, NodeError, RequestError
from engine.server.model import ServedModel


def batch_size(inputs: dict[str, np.ndarray]) -> int:
    """The client's batch size: the first dimension of its inputs (1 with none)."""
    return next((int(np.shape(a)[0]) for a in inputs.values()), 1)


def assemble_stream(events: list[dict[str, np.ndarray]], streamed: frozenset[str]) -> dict:
    """A whole response from a stream's events: streamed outputs joined, others the last."""
    from engine.executor import concat_deltas

    chunks: dict[str, list[np.ndarray]] = {}
    for outputs in events:
        for name, array in outputs.items():
            if name in streamed:
                chunks.setdefault(name, []).append(array[0])
            else:
                chunks[name] = [array[0]]
    return {n: concat_deltas(c)[np.newaxis] if n in streamed else c[0][np.newaxis]
            for n, c in chunks.items()}  # fmt: skip


async def gather_items(calls: list) -> list:
    """Await every call; on the first error cancel the rest and raise it."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def stack_outputs(wanted: list[str], per_item: list[dict[str, np.ndarray]]) -> dict:
    """Stack each output over the batch; an output every item skipped (its node's condition was
    false) is left out."""
    out = {}
    for name in wanted:
        arrays = [r.get(name) for r in per_item]
        present = [a for a in arrays if a is not None]
        if not present:
            continue
        if len(present) != len(arrays):
            raise InvalidInput(
                f"output {name!r} was produced for some items of the batch and skipped for "
                "others; send these items in separate requests"
            )
        if len(arrays) == 1:
            out[name] = np.asarray(arrays[0])[np.newaxis]
            continue
        try:
            out[name] = np.stack(arrays)
        except ValueError:
            shapes = sorted({tuple(np.shape(a)) for a in arrays})
            raise InvalidInput(
                f"output {name!r} has different shapes across the batch ({shapes}); "
                "send these items in separate requests"
            ) from None
    return out


def reraise(exc: Exception, model: ServedModel) -> NoReturn:
    """Re-raise a RequestError as is; anything else becomes a NodeError (INTERNAL)."""
    if isinstance(exc, RequestError):
        raise exc
    raise NodeError(f"model {model.name!r}: {type(exc).__name__}: {exc}") from exc
