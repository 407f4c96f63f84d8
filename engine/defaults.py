"""A pipeline file's `defaults:` merged with each node's own settings: the one place where a
node's batching and placement fields are resolved. A field a node sets wins; else the file's
`defaults`; else the built-in default (BatchPolicy's, or the caller's fallback).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from engine.plan import BatchPolicy
from engine.spec import NodeSpec, PipelineSpec


def batching_fields(spec: PipelineSpec, node: NodeSpec) -> dict[str, Any]:
    """The BatchPolicy fields `node` sets or inherits from `defaults.batching` (the others are
    left to BatchPolicy's defaults); lists become tuples."""
    own, defaults = node.batching, spec.defaults.batching
    merged = {}
    for f in fields(BatchPolicy):
        value = getattr(own, f.name, None) if own is not None else None
        if value is None:
            value = getattr(defaults, f.name)
        if value is not None:
            merged[f.name] = tuple(value) if isinstance(value, list) else value
    return merged


def placement_field(spec: PipelineSpec, node: NodeSpec, name: str, fallback: Any) -> Any:
    """Placement field `name` of `node`: its own, else `defaults.placement`'s, else `fallback`."""
    for source in (node.placement, spec.defaults.placement):
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            return value
    return fallback
