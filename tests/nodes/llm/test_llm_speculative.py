"""Prompt-lookup speculative decoding: the proposer alone, then whole engines with speculation
on and off on the same requests (greedy output token-identical, many sequences at once, under
a tight token budget and under preemption), and the node's `speculative` param."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.node import LLMParams
from nodes.llm.sampling import SamplingParams
from nodes.llm.speculative import SpeculativeConfig, accept, propose_ngram

GREEDY = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
BASE = {"dtype": "fp32", "block_size": 4, "kv_cache_bytes": 4 << 20, "max_num_seqs": 64,
        "max_num_batched_tokens": 256, "max_model_len": 256}  # fmt: skip
SPEC = SpeculativeConfig(num_speculative_tokens=3, prompt_lookup_max=3, prompt_lookup_min=1)


def test_the_longest_ngram_that_occurred_before_proposes_what_followed_it():
    #         0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 9, 6, 7, 1, 5, 6, 7]
    # the 3-gram (5, 6, 7) occurred at 0: propose what followed it
    assert propose_ngram(tokens, 3, 1, 3) == [8, 9, 6]
    assert propose_ngram(tokens, 2, 1, 3) == [8, 9]
    # only 2-grams looked up: (6, 7) last occurred at 5, followed by 1, 5, 6
    assert propose_ngram(tokens, 3, 1, 2) == [1, 5, 6]
    assert propose_ngram([1, 2, 3, 4], 3, 1, 3) == []  # nothing repeats
    assert propose_ngram([4, 4], 3, 1, 1) == [4]  # the suffix itself is not a match
    assert propose_ngram([1, 2, 3, 1, 2], 5, 2, 2) == [3, 1, 2]


def test_proposals_are_accepted_up_to_the_first_mismatch_plus_the_models_token():
    assert accept([8, 9, 6], [8, 9, 6, 2]) == [8, 9, 6, 2]
    assert accept([8, 9, 6], [8, 3, 6, 2]) == [8, 3]
    assert accept([8, 9, 6], [1, 9, 6, 2]) == [1]


def test_config_follows_vllms_defaults_and_checks():
    assert (SpeculativeConfig(4).prompt_lookup_min, SpeculativeConfig(4).prompt_lookup_max) == (
        5,
        5,
    )
    assert SpeculativeConfig(4, prompt_lookup_max=3).prompt_lookup_min == 3
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        SpeculativeConfig(4, prompt_lookup_max=2, prompt_lookup_min=3)
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        SpeculativeConfig(0)
    with pytest.raises(ValueError, match="method"):
        SpeculativeConfig(3, method="eagle")
    params = LLMParams(speculative={"method": "ngram", "num_speculative_tokens": 4,
                                    "prompt_lookup_max": 3})  # fmt: skip
    assert params.engine_config("cpu").speculative == SpeculativeConfig(4, 3, 3)
    with pytest.raises(ValueError, match="method"):
        LLMParams(speculative={"method": "draft_model", "num_speculative_tokens": 4})
    with pytest.raises(ValueError, match="extra"):
        LLMParams(speculative={"method": "ngram", "num_speculative_tokens": 4, "model": "x"})


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    """Short random patterns repeated three times: what a prompt lookup can find."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        size = int(torch.randint(4, 12, (1,), generator=gen))
        out.append(torch.randint(3, 40000, (size,), generator=gen).tolist() * 3)
    return out


def _generate(folder, prompts, params, speculative=None, **overrides):
    engine = LLMEngine(folder, EngineConfig(**(BASE | overrides), speculative=speculative))
    try:
        out = engine.generate(prompts, params)
        stats = engine.statistics()
        assert stats["kv_blocks_used"] == 0  # rejected proposals left no block behind
        return out, stats, engine.scheduler.num_preemptions
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    """Greedy outputs of 12 prompts, all at once, without speculation."""
    prompts = _prompts(12)
    out, _, _ = _generate(tiny_model_dir, prompts, GREEDY)
    return prompts, [c.token_ids for c in out]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # 12 sequences at once
        {"max_num_batched_tokens": 20, "max_num_seqs": 12},  # proposals cut to the budget
        {"kv_cache_bytes": 30 * 2 * 2 * 4 * 2 * 32 * 4},  # 30 blocks: preemption is forced
    ],
    ids=["batch", "tight-budget", "preemption"],
)
def test_greedy_output_is_token_identical_with_speculation(tiny_model_dir, plain, overrides):
    prompts, expected = plain
    out, stats, preemptions = _generate(tiny_model_dir, prompts, GREEDY, SPEC, **overrides)
    assert [c.token_ids for c in out] == expected
    assert all(c.completion_tokens == 40 and c.finish_reason == "length" for c in out)
    assert stats["spec_draft_tokens"] > 0 and 0 < stats["spec_accepted_tokens"]
    assert stats["spec_accepted_tokens"] <= stats["spec_draft_tokens"]
    assert stats["spec_acceptance_rate"] == pytest.approx(
        stats["spec_accepted_tokens"] / stats["spec_draft_tokens"]
    )
    assert stats["generated_tokens"] == 12 * 40
    if "kv_cache_bytes" in overrides:
        assert preemptions > 0


def test_greedy_output_is_token_identical_with_speculation_on_int4_weights(tiny_model_dir):
    """The same with the weights kept as int4 (as a Q4 GGUF runs): the check's chunk and a plain
    step's single row go through different matmul paths, which must agree bit for bit."""
    prompts = _prompts(6, seed=1)
    plain, _, _ = _generate(tiny_model_dir, prompts, GREEDY, quantization="int4")
    out, stats, _ = _generate(tiny_model_dir, prompts, GREEDY, SPEC, quantization="int4")
    assert [c.token_ids for c in out] == [c.token_ids for c in plain]
    assert stats["spec_accepted_tokens"] > 0


def test_stops_logprobs_and_sampled_requests_match_without_speculation(tiny_model_dir, plain):
    prompts, expected = plain
    stop_at = expected[0][7]  # a token the first answer reaches mid-way
    params = [
        SamplingParams(max_tokens=13, temperature=0, ignore_eos=True, logprobs=True),
        SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, stop_token_ids=(stop_at,)),
        SamplingParams(max_tokens=20, temperature=0.8, seed=7, ignore_eos=True),  # not speculated
        SamplingParams(max_tokens=17, temperature=0, ignore_eos=True, repetition_penalty=1.3),
    ]
    chosen = [prompts[0], prompts[0], prompts[1], prompts[2]]
    off, _, _ = _generate(tiny_model_dir, chosen, params)
    on, stats, _ = _generate(tiny_model_dir, chosen, params, SPEC)
    assert [c.token_ids for c in on] == [c.token_ids for c in off]
    assert [c.finish_reason for c in on] == [c.finish_reason for c in off]
    assert on[0].completion_tokens == 13 and on[1].token_ids[-1] == stop_at
    np.testing.assert_allclose(on[0].logprobs, off[0].logprobs, atol=1e-4)  # fp32
    assert stats["spec_draft_tokens"] > 0


def test_streamed_deltas_carry_several_tokens_and_add_up(tiny_model_dir, plain):
    import asyncio

    prompts, expected = plain
    engine = LLMEngine(tiny_model_dir, EngineConfig(**BASE, speculative=SPEC))

    async def collect():
        return [d async for d in engine.stream(prompts[3], GREEDY)]

    try:
        deltas = asyncio.run(collect())
    finally:
        engine.shutdown()
    assert [t for d in deltas for t in d.token_ids] == expected[3]
    assert max(len(d.token_ids) for d in deltas) > 1  # accepted proposals come together
    assert deltas[-1].finished and deltas[-1].completion_tokens == 40
