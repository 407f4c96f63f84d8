"""A deterministic streaming node kind for the server tests (`test_words`), and the entry point
that serves with it registered: `python -m tests.server.stream_kind serve FILE...`.

It answers "echo:" followed by the prompt's words, one word per streamed delta (like an LLM's
tokens), up to `max_tokens`; its last delta carries the usage counts and the finish reason.
A prompt containing FAIL raises after the first word (an in-band stream error); one containing DIE
raises KeyboardInterrupt there, which loses the instance (restarted: engine/instance_health.py).
With `reload_gate`, every load after the first waits (up to 120 s) until that file exists, so that
a test sees the instance down while it restarts, and then lets it come back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register


class WordsParams(NodeParams):
    delay_s: float = 0.01
    reload_gate: str = ""


@register
class WordStream(Node):
    kind = "test_words"
    Params = WordsParams
    streaming = True
    deterministic = True  # the same prompt gives the same words
    stream_outputs = ("text",)
    loads = 0  # loads in this process, over every instance

    def load(self, device: str) -> None:
        super().load(device)
        WordStream.loads += 1
        if WordStream.loads > 1 and self.params.reload_gate:
            gate = Path(self.params.reload_gate)
            for _ in range(12_000):
                if gate.exists():
                    break
                time.sleep(0.01)

    @classmethod
    def ports(cls, params):
        return Ports(
            inputs={
                "prompt": TensorSpec("BYTES", (1,)),
                "max_tokens": TensorSpec("INT32", (1,), optional=True, default=16),
            },
            outputs={
                "text": TensorSpec("BYTES", (1,)),
                "prompt_tokens": TensorSpec("INT32", (1,)),
                "completion_tokens": TensorSpec("INT32", (1,)),
                "finish_reason": TensorSpec("BYTES", (1,)),
            },
        )

    async def stream(self, item):
        prompt = bytes(item["prompt"][0])
        limit = int(np.asarray(item.get("max_tokens", 16)).reshape(-1)[0])
        words = [b"echo:", *prompt.split()]
        sent = 0
        for i, word in enumerate(words[:limit]):
            await asyncio.sleep(self.params.delay_s)
            if i == 1 and b"FAIL" in prompt:
                raise RuntimeError("asked to fail")
            if i == 1 and b"DIE" in prompt:
                raise KeyboardInterrupt("asked to die")
            yield {"text": np.array([word if i == 0 else b" " + word], dtype=object)}
            sent += 1
        yield {
            "text": np.array([b""], dtype=object),
            "prompt_tokens": np.array([len(prompt.split())], dtype=np.int32),
            "completion_tokens": np.array([sent], dtype=np.int32),
            "finish_reason": np.array([b"length" if len(words) > limit else b"stop"], dtype=object),
        }


if __name__ == "__main__":
    from engine.cli import main

    sys.exit(main())
