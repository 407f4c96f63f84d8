"""Functions of the `python` nodes in the server test pipelines."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def upper(items):
    return [{"text": np.array([t.upper() for t in item["text"]], dtype=object)} for item in items]


def scale(items, factor: float = 2.0):
    return [{"y": item["x"] * factor} for item in items]


def length(items):
    return [{"n": np.array([len(item["text"][0])], dtype=np.int64)} for item in items]


def slow(items, seconds: float = 1.0):
    time.sleep(seconds)
    return [{"y": item["x"]} for item in items]


def gated(items, folder: str):
    """Holds each call until a file `open` appears in `folder`, after touching `entered` there:
    a test in another process then knows that a worker is busy without sleeping on it."""
    gate = Path(folder)
    (gate / "entered").touch()
    for _ in range(3000):  # 30 s: only a test that never opens the gate gets near it
        if (gate / "open").exists():
            return [{"y": item["x"]} for item in items]
        time.sleep(0.01)
    raise TimeoutError(f"{gate / 'open'} never appeared")


def fail_negative(items):
    """Fails every batch that holds a negative value."""
    if any(float(item["x"][0]) < 0 for item in items):
        raise ValueError("negative values are not allowed")
    return [{"y": item["x"]} for item in items]


def add(items, seconds: float = 0.0):
    """y = a + b (the join of two branches), after `seconds` of work."""
    if seconds:
        time.sleep(seconds)
    return [{"y": item["a"] + item["b"]} for item in items]
