"""One LLM engine per (model file, engine config) in a process: llm nodes and the rerank judge
that agree share weights, KV cache and step loop; the last user shuts it down."""

from __future__ import annotations

import numpy as np

from nodes.llm import shared
from nodes.llm.node import LLMNode, LLMParams


def _b(text: str) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = text.encode()
    return out


def test_same_model_and_config_share_one_engine(tiny_model_dir):
    params = LLMParams(model=str(tiny_model_dir), dtype="fp32", kv_cache_bytes=4 << 20,
                       max_tokens=4, ignore_eos=True, block_size=4)  # fmt: skip
    first, second = LLMNode(params), LLMNode(params.model_copy(update={"max_tokens": 2}))
    other = LLMNode(params.model_copy(update={"kv_cache_bytes": 8 << 20}))
    before = shared.engines_loaded()
    for node in (first, second, other):
        node.load("cpu")
    try:
        # sampling params differ per node; the engine config is what decides sharing
        assert first.engine is second.engine and other.engine is not first.engine
        assert shared.users(first.engine) == 2 and shared.engines_loaded() == before + 2
        out = first.run_batch([{"prompt": _b("a b")}])[0]
        assert int(out["completion_tokens"][0]) == 4
        assert int(second.run_batch([{"prompt": _b("a b")}])[0]["completion_tokens"][0]) == 2
        engine = first.engine
        first.close()
        assert shared.users(engine) == 1 and second.run_batch([{"prompt": _b("c")}])
    finally:
        for node in (first, second, other):
            node.close()
    assert shared.engines_loaded() == before


def test_the_rerank_judge_shares_the_generators_engine(smollm2_path):
    from nodes.rerank.llm_judge import LLMJudgeScorer

    params = LLMParams(model=str(smollm2_path), dtype="fp32", kv_cache_bytes=64 << 20,
                       max_num_seqs=8, max_tokens=4)  # fmt: skip
    node = LLMNode(params)
    node.load("cpu")
    judge = LLMJudgeScorer(smollm2_path, dtype="fp32", prompt="Relevant? {query} {passage}",
                           batch_size=8, kv_cache_mb=64)  # fmt: skip
    try:
        assert judge.engine is node.engine and shared.users(node.engine) == 2
        scores = judge.score(["what is a file?"], ["A file holds bytes on a disk."])
        assert np.isfinite(scores).all()
        text = node.run_batch([{"prompt": _b("The capital of France is")}])[0]["text"][0]
        assert text
    finally:
        judge.close()
        node.close()
