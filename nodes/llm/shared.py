"""LLM engines shared by every node of the process that loads the same model file with the same
engine config: the `llm` kind and the `rerank` kind's llm_judge, in one pipeline or across
pipelines (a model repository of ten pipelines loads a model once, not ten times).

Sharing one engine means one set of weights, one KV cache and one step loop: the requests of
all its users are batched together continuously. The key is the resolved model path, the model
file's size and modification time (a changed file loads anew) and the whole EngineConfig (dtype,
device, KV budget, limits), so nodes that ask for different limits get their own engine.
Reference-counted: the last `release` shuts the engine down and frees its memory. An engine whose
step loop died (`LLMEngine.lost`) is never handed out again: the next `acquire` loads a new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from nodes.llm.config import EngineConfig


@dataclass
class _Entry:
    users: int = 0
    engine: object | None = None
    error: BaseException | None = None
    loaded: threading.Event = field(default_factory=threading.Event)


_lock = threading.Lock()
_pool: dict[tuple, _Entry] = {}


def _key(path: Path, config: EngineConfig) -> tuple:
    from nodes.compute_dtype import resolve_dtype

    # `auto` and the dtype it resolves to on this device are the same engine
    config = replace(config, dtype=resolve_dtype(config.dtype, config.device).dtype)
    path = Path(path).resolve()
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    stamps = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists())
    return (str(path), stamps, config)


def acquire(path: Path, config: EngineConfig):
    """The engine for (`path`, `config`), loading it on first use (blocking; concurrent callers
    for the same key wait for one load). Raises what the load raised."""
    from nodes.llm.engine import LLMEngine

    key = _key(path, config)
    with _lock:
        entry = _pool.get(key)
        if entry is not None and getattr(entry.engine, "lost", None) is not None:
            entry = None  # its step loop died: its users reload onto a new engine
        first = entry is None
        if first:
            entry = _pool[key] = _Entry()
        entry.users += 1
    if first:
        try:
            entry.engine = LLMEngine(path, config)
        except BaseException as exc:
            entry.error = exc
            with _lock:
                _pool.pop(key, None)
            raise
        finally:
            entry.loaded.set()
    entry.loaded.wait()
    if entry.error is not None:
        raise entry.error
    return entry.engine


def release(engine) -> None:
    """One user less; the last one shuts the engine down (its thread, weights and KV cache)."""
    with _lock:
        for key, entry in list(_pool.items()):
            if entry.engine is engine:
                entry.users -= 1
                if entry.users > 0:
                    return
                del _pool[key]
                break
    engine.shutdown()


def users(engine) -> int:
    """How many nodes hold `engine` (0 once it is released or was never shared)."""
    with _lock:
        return next((e.users for e in _pool.values() if e.engine is engine), 0)


def engines_loaded() -> int:
    """Distinct engines loaded in this process."""
    with _lock:
        return sum(1 for e in _pool.values() if e.engine is not None)
