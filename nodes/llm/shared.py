"""LLM engines shared by every node of the process that loads the same model file with the same
engine config: the `llm` kind and the `rerank` kind's llm_judge, in one pipeline or across
pipelines (a model repository of ten pipelines loads a model once, not ten times).

Sharing one engine means one set of weights, one KV cache and one step loop: the requests of
all its users are batched together continuously. The key is the resolved model path, the model
file's size and modification time (a changed file loads anew) and the whole EngineConfig (dtype,
device, KV budget, limits), so nodes that ask for different limits get their own engine.
Reference-counted (nodes/shared.py, the pool batched nodes share through too): the last
`release` shuts the engine down and frees its memory. An engine whose step loop died
(`LLMEngine.lost`) is never handed out again: the next `acquire` loads a new one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nodes.llm.config import EngineConfig
from nodes.shared import SharedPool

_pool: SharedPool = SharedPool(close=lambda engine: engine.shutdown())


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

    return _pool.acquire(_key(path, config), lambda: LLMEngine(path, config), _lost)


def _lost(engine) -> bool:
    """Its step loop died: its users reload onto a new engine."""
    return getattr(engine, "lost", None) is not None


def release(engine) -> None:
    """One user less; the last one shuts the engine down (its thread, weights and KV cache)."""
    _pool.release(engine)


def users(engine) -> int:
    """How many nodes hold `engine` (0 once it is released or was never shared)."""
    return _pool.users(engine)


def engines_loaded() -> int:
    """Distinct engines loaded in this process."""
    return _pool.loaded()
