"""The `llm` node kind: ports, params checks, run_batch, and streaming with early close."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from nodes.llm.node import LLMNode, LLMParams
from nodes.registry import get_kind


def _b(text: str) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = text.encode()
    return out


@pytest.fixture(scope="module")
def node(tiny_model_dir):
    params = LLMParams(model=str(tiny_model_dir), dtype="fp32", kv_cache_bytes=4 << 20,
                       max_tokens=8, ignore_eos=True, block_size=4)  # fmt: skip
    node = LLMNode(params)
    node.load("cpu")
    yield node
    node.close()


def test_kind_ports_and_params():
    assert get_kind("llm") is LLMNode
    ports = LLMNode.ports(LLMParams())
    assert set(ports.outputs) == {
        "text", "finish_reason", "prompt_tokens", "completion_tokens", "token_logprobs"
    }  # fmt: skip
    assert ports.inputs["prompt"].optional and ports.inputs["messages"].optional
    assert (
        ports.inputs["max_tokens"].dtype == "INT64" and ports.inputs["temperature"].dtype == "FP32"
    )
    assert LLMNode.streaming and LLMNode.stream_outputs == ("text", "token_logprobs")
    assert set(LLMNode.request_parameters) <= set(ports.inputs)
    assert all(ports.inputs[p].optional for p in LLMNode.request_parameters)
    with pytest.raises(ValidationError, match="max_num_seqs"):
        LLMParams(max_num_seqs=64, max_num_batched_tokens=16)
    with pytest.raises(ValidationError):
        LLMParams(beam_width=4)
    assert LLMNode.memory_bytes(LLMParams()) > LLMParams().kv_cache_bytes


def test_run_batch_prompt_messages_and_overrides(node):
    chat = json.dumps([{"role": "user", "content": "Say hi"}])
    items = [
        {"prompt": _b("The sky is")},
        {"messages": _b(chat), "max_tokens": np.array([3], dtype=np.int64)},
        {"prompt": _b("The sky is"), "temperature": np.array([0.0], dtype=np.float32)},
    ]
    out = node.run_batch(items)
    assert [int(o["completion_tokens"][0]) for o in out] == [8, 3, 8]
    assert out[1]["finish_reason"][0] == b"length"
    assert out[0]["text"][0] == out[2]["text"][0]  # greedy either way
    assert int(out[0]["prompt_tokens"][0]) == len(node.engine.tokenizer.encode("The sky is"))
    with pytest.raises(ValueError, match="exactly one"):
        node.run_batch([{"prompt": _b("a"), "messages": _b(chat)}])
    with pytest.raises(ValueError, match="not JSON"):
        node.run_batch([{"messages": _b("{oops")}])


def test_stream_concatenates_to_run_batch_and_close_aborts(node):
    item = {"prompt": _b("Once upon a time")}
    expected = node.run_batch([item])[0]

    async def collect(limit=None):
        events = []
        async with contextlib.aclosing(node.stream(item)) as stream:
            async for event in stream:
                events.append(event)
                if limit and len(events) == limit:
                    break
        return events

    events = asyncio.run(collect())
    assert b"".join(e["text"][0] for e in events) == expected["text"][0]
    assert events[-1]["finish_reason"][0] == b"length"
    assert int(events[-1]["completion_tokens"][0]) == 8
    asyncio.run(collect(limit=1))
    engine = node.engine
    for _ in range(200):
        if not engine.scheduler.has_work() and engine._inbox.empty():
            break
        asyncio.run(asyncio.sleep(0.01))
    assert engine.statistics()["kv_blocks_used"] == 0 and not engine.scheduler.has_work()
