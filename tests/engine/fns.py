"""Functions for `python` nodes in tests, and a small streaming node kind (`test_stream`)."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

import numpy as np

from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register

calls: list[tuple[str, int]] = []  # (function, batch size) of every call, for assertions
_lock = threading.Lock()


def _record(name: str, items: list) -> None:
    with _lock:
        calls.append((name, len(items)))


def identity(items):
    return [{"y": item["x"]} for item in items]


def double(items):
    _record("double", items)
    return [{"y": item["x"] * 2} for item in items]


def add(items):
    return [{"y": item["a"] + item["b"]} for item in items]


def upper(items):
    _record("upper", items)
    return [{"text": np.array([t.upper() for t in item["text"]], dtype=object)} for item in items]


def length(items):
    _record("length", items)
    return [{"n": np.array([len(item["text"][0])], dtype=np.int64)} for item in items]


def fail_on(items, bad: float = 13.0):
    """Doubles x, but raises if any item of the batch holds `bad`."""
    _record("fail_on", items)
    if any(float(item["x"][0]) == bad for item in items):
        raise ValueError(f"cannot handle {bad}")
    return [{"y": item["x"] * 2} for item in items]


def sleep(items, seconds: float = 0.1):
    _record("sleep", items)
    time.sleep(seconds)
    return [{"y": item["x"]} for item in items]


# How long a test lets a gated call or a rendezvous wait before calling it a failure. Only a hang
# comes near it: tests say "B happened while A was inside the node" with events, never with time.
WAIT_S = 30.0


class Gate:
    """Holds calls of `gated` inside the node until the test opens it: `entered` counts the
    calls that are inside, so a test knows a worker is busy without sleeping."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self._cond = threading.Condition()
        self.entered = 0

    def enter(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        if not self.opened.wait(WAIT_S):
            raise TimeoutError("gate never opened")

    def wait_entered(self, count: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.entered >= count, WAIT_S), self.entered


gate = Gate()
rendezvous_barrier = threading.Barrier(2, timeout=WAIT_S)


def reset_gate() -> Gate:
    """A fresh gate and rendezvous for the next test (module state: node functions find them
    by name)."""
    global gate
    gate = Gate()
    rendezvous_barrier.reset()
    return gate


def gated(items):
    _record("gated", items)
    gate.enter()
    return [{"y": item["x"]} for item in items]


def rendezvous(items):
    """Returns only once another call is inside at the same time: it proves two calls overlap
    (a serial run breaks the barrier and fails)."""
    _record("rendezvous", items)
    rendezvous_barrier.wait()
    return [{"y": item["x"]} for item in items]


def with_default(items):
    """y = x + k, where k is an optional input."""
    return [{"y": item["x"] + item.get("k", np.zeros(1, np.float32))} for item in items]


class Token:
    """A value whose lifetime tests can watch (numpy arrays cannot be weakly referenced)."""


tokens: list[weakref.ref] = []


def make_token(items):
    out = []
    for _ in items:
        token = Token()
        tokens.append(weakref.ref(token))
        out.append({"y": np.array([token], dtype=object)})
    return out


def token_seen(items):
    return [{"y": np.array([1.0], np.float32)} for _ in items]


def bad_count(items):
    return [{"y": items[0]["x"]}]


class StreamParams(NodeParams):
    delay_s: float = 0.0


class EchoStream(Node):
    """Streams its input text back one character at a time, then its length."""

    kind = "test_stream"
    Params = StreamParams
    streaming = True
    stream_outputs = ("text",)
    closed_early = 0  # streams closed before their end (cancellation reached the node)

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs={"text": TensorSpec("BYTES", (1,))},
            outputs={"text": TensorSpec("BYTES", (1,)), "n": TensorSpec("INT64", (1,))},
        )

    def statistics(self) -> dict[str, int]:
        return {"streams": self.streams}

    async def stream(self, item):
        self.streams = getattr(self, "streams", 0) + 1
        text = item["text"][0]
        finished = False
        try:
            for i in range(len(text)):
                await asyncio.sleep(self.params.delay_s)
                yield {"text": np.array([text[i : i + 1]], dtype=object)}
            yield {"n": np.array([len(text)], dtype=np.int64)}
            finished = True
        finally:
            if not finished:
                type(self).closed_early += 1


register(EchoStream)
