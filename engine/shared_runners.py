"""Batched nodes shared across pipelines: two nodes (in one pipeline or in two) of a kind that
declares `Node.shareable`, with the same params, placement and batching, run on one Batcher and
its instances. The model loads once, and their requests wait in one queue and batch together, as
the LLM engine is shared (nodes/llm/shared.py). Both pools are `nodes.shared.SharedPool`s.

The key holds the kind, the params with every file they name resolved (`pkg:` and paths
relative to the pipeline file's folder) and stamped (size and modification time: a changed
file loads anew on the next load), the instances' devices and dtypes, the backend and the
batching policy. Reference-counted: unloading one pipeline keeps the runner for the others; the
last `release` stops it (draining its queue) and frees its instances.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from engine.batcher import Batcher
from engine.plan import NodePlan
from engine.runner import OnDone, OnLoaded
from nodes.shared import SharedPool

_drain = threading.local()  # how the last user asked to stop: drain or not
_pool: SharedPool[Batcher] = SharedPool(close=lambda b: b.stop(drain=getattr(_drain, "on", True)))


def _stamp(path: Path) -> list:
    """(name, size, mtime_ns) of a file, or of a folder and the files directly in it."""
    files = [path, *sorted(p for p in path.iterdir() if p.is_file())] if path.is_dir() else [path]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _resolved(value, base_dir: str | None):
    """`value` (params as JSON) with every string that names an existing file replaced by the
    file's absolute path and stamp."""
    from nodes.paths import resolve_path

    if isinstance(value, dict):
        return {k: _resolved(v, base_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, base_dir) for v in value]
    if isinstance(value, str) and value:
        try:
            path = resolve_path(value, base_dir)
            if path.exists():
                return {"file": str(path.resolve()), "stamp": _stamp(path)}
        except (OSError, ValueError, ImportError):
            pass  # not a file reference
    return value


def runner_key(node: NodePlan, base_dir: str | None) -> str | None:
    """What makes two nodes' runners the same (see the module docstring), or None for a node
    that runs alone: a streaming kind (its engine is shared instead) or a kind not shareable."""
    from nodes.registry import get_kind

    if node.streaming or not get_kind(node.kind).shareable:
        return None
    key = {
        "kind": node.kind,
        "params": _resolved(node.params.model_dump(mode="json"), base_dir),
        "instances": [[i.device, i.dtype] for i in node.instances],
        "backend": node.backend.to_dict(),
        "batching": repr(node.batching),
    }
    return json.dumps(key, sort_keys=True)


def acquire(
    key: str, node: NodePlan, base_dir: str | None, on_done: OnDone, on_loaded: OnLoaded | None
) -> Batcher:
    """The started Batcher for `key`: made and started (its instances loading) by the first
    user; later users get the same one. Call `wait_loaded` on it, then `release` it."""

    def start() -> Batcher:
        batcher = Batcher(node, base_dir, on_done)
        batcher.start(on_loaded)
        return batcher

    return _pool.acquire(key, start)


def release(batcher: Batcher, drain: bool = True) -> None:
    """One user less; the last one stops the batcher (draining its queue when `drain`)."""
    _drain.on = drain
    try:
        _pool.release(batcher)
    finally:
        _drain.on = True


def users(batcher) -> int:
    """How many nodes share `batcher` (0 for one that is not shared)."""
    return _pool.users(batcher)
