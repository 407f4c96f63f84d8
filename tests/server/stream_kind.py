"""A deterministic streaming node kind for the server tests (`test_words`), and the entry point
that serves with it registered: `python -m tests.server.stream_kind serve FILE...`.

It answers "echo:" followed by the prompt's words, one word per streamed delta (like an LLM's
tokens), up to `max_tokens`; its last delta carries the usage counts and the finish reason.
A prompt containing FAIL raises after the first word (an in-band stream error).
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register


class WordsParams(NodeParams):
    delay_s: float = 0.01


@register
class WordStream(Node):
    kind = "test_words"
    Params = WordsParams
    streaming = True
    deterministic = True  # the same prompt gives the same words
    stream_outputs = ("text",)

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
