"""Functions of the fault-injection pipelines (bench/reliability.py): each serves x >= 0 as the
identity and misbehaves on x < 0 in its own way."""

from __future__ import annotations

import sys
import time


def _bad(items) -> bool:
    return any(float(item["x"][0]) < 0 for item in items)


def raises(items):
    if _bad(items):
        raise ValueError("injected fault: negative x")
    return [{"y": item["x"]} for item in items]


def exits(items):
    if _bad(items):
        sys.exit("injected fault: sys.exit")
    return [{"y": item["x"]} for item in items]


def hangs(items, seconds: float = 10.0):
    if _bad(items):
        time.sleep(seconds)
    return [{"y": item["x"]} for item in items]


def kills(items):
    """KeyboardInterrupt is the one exception a node's containment lets through (issue 8): the
    instance's thread dies as if killed, and must be restarted."""
    if _bad(items):
        raise KeyboardInterrupt("injected fault: the instance is killed")
    return [{"y": item["x"]} for item in items]
