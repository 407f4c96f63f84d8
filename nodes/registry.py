"""Node kinds by name: the built-in ones and third-party ones from the `pipectl.nodes` entry points."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from nodes.base import Node
from nodes.errors import PipelineError

# kind name → "module:Class"; imported lazily so that `pipectl validate` stays fast.
BUILTIN_KINDS: dict[str, str] = {
    "encoder": "nodes.encoder:EncoderNode",
    "faiss_search": "nodes.faiss_search:FaissSearchNode",
    "template": "nodes.template:TemplateNode",
    "python": "nodes.python_fn:PythonNode",
    "llm": "nodes.llm.node:LLMNode",
    "rerank": "nodes.rerank.node:RerankNode",
}

_registered: dict[str, type[Node]] = {}


class UnknownKind(PipelineError, LookupError):
    """No node kind by that name; the message lists the kinds that exist."""


def register(cls: type[Node]) -> type[Node]:
    """Register a kind class under `cls.kind` (usable as a decorator)."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind name")
    _registered[cls.kind] = cls
    return cls


def _entry_point_kinds() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="pipectl.nodes")}


def kind_names() -> list[str]:
    """Every kind name that can be used in a pipeline file."""
    return sorted(set(BUILTIN_KINDS) | set(_registered) | set(_entry_point_kinds()))


def get_kind(name: str) -> type[Node]:
    """The class of kind `name`; raises UnknownKind listing the kinds."""
    if name in _registered:
        return _registered[name]
    target = BUILTIN_KINDS.get(name) or _entry_point_kinds().get(name)
    if target is None:
        raise UnknownKind(f"unknown kind {name!r}; kinds: {', '.join(kind_names())}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    _registered[name] = cls
    return cls
