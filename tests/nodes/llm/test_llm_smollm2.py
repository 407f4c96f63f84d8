"""SmolLM2-135M-Instruct (GGUF Q4_1): greedy tokens identical to transformers in fp32, and its chat
template. Loads transformers' model once for the module."""

from __future__ import annotations

import pytest
import torch

from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

pytestmark = pytest.mark.integration

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "Water boils at a temperature of",
    "Here is a recipe for pancakes:",
    "In 1492, Christopher Columbus",
    "The quick brown fox",
]


@pytest.fixture(scope="module")
def engine(smollm2_path):
    engine = LLMEngine(
        smollm2_path, EngineConfig(dtype="fp32", kv_cache_bytes=64 << 20, quantization="none")
    )
    yield engine
    engine.shutdown()


@torch.inference_mode()
def _hf_greedy(model, ids: list[int], steps: int) -> list[int]:
    """Plain greedy decoding with transformers' KV cache (no EOS handling, no logits processors)."""
    out = model(torch.tensor([ids]), use_cache=True)
    tokens = []
    for _ in range(steps):
        token = int(out.logits[0, -1].argmax())
        tokens.append(token)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens


def test_greedy_tokens_match_transformers(engine, smollm2_path):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    ).eval()
    params = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
    ours = engine.generate(PROMPTS, params)
    for prompt, completion in zip(PROMPTS, ours):
        ids = engine.tokenizer.encode(prompt)
        assert completion.token_ids == _hf_greedy(hf, ids, 32), prompt
        assert completion.prompt_tokens == len(ids) and completion.completion_tokens == 32


def test_chat_template_and_eos(engine):
    ids = engine.tokenizer.apply_chat([{"role": "user", "content": "What is 2+2?"}])
    text = engine.tokenizer.hf.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    answer = engine.generate([ids], SamplingParams(max_tokens=64, temperature=0))[0]
    assert answer.finish_reason == "stop" and "4" in answer.text
    assert answer.token_ids[-1] in engine.eos_ids


def test_default_node_streams_a_chat_answer_in_its_auto_dtype():
    import asyncio
    import contextlib
    import json

    import numpy as np

    from nodes.compute_dtype import resolve_dtype
    from nodes.llm.node import LLMNode, LLMParams

    node = LLMNode(LLMParams(max_tokens=48, kv_cache_bytes=64 << 20))
    node.load("cpu")
    assert node.dtype.dtype == resolve_dtype("auto", "cpu").dtype
    try:
        chat = np.empty(1, dtype=object)
        chat[0] = json.dumps(
            [{"role": "user", "content": "What is the capital of France?"}]
        ).encode()

        async def collect():
            async with contextlib.aclosing(node.stream({"messages": chat})) as stream:
                return [event async for event in stream]

        events = asyncio.run(collect())
        text = b"".join(e["text"][0] for e in events).decode()
        assert "Paris" in text
        assert len(events) > 3  # streamed in deltas, not at once
        assert events[-1]["finish_reason"][0] in (b"stop", b"length")
    finally:
        node.close()
