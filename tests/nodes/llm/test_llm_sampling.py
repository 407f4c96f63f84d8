"""The sampler on hand-made logits: greedy, temperature, top-k/p, penalties, seeds, logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.llm.sampling import SamplingParams, argmax_rows, sample
from nodes.llm.sequence import Sequence


def _seq(params: SamplingParams, prompt=(1, 2, 3), output=()) -> Sequence:
    seq = Sequence("r", list(prompt), params, 0.0)
    seq.token_ids += list(output)
    return seq


def _draws(logits: list[float], params: SamplingParams, n: int) -> list[int]:
    seqs = [_seq(params) for _ in range(n)]
    tokens, *_ = sample(torch.tensor([logits] * n), seqs)
    return tokens


def test_greedy_takes_the_argmax_per_row():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.9], [5.0, 0.0, 0.0, 4.0]])
    tokens, logprobs, scores, _ = sample(logits.clone(), [_seq(SamplingParams(temperature=0))] * 2)
    assert tokens == [1, 0] and logprobs is None and scores is None


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 5), vocab=st.integers(1, 700), chunk=st.sampled_from([1, 4, 256]),
    levels=st.integers(1, 4), nans=st.integers(0, 2), seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_argmax_rows_is_torchs_argmax(rows, vocab, chunk, levels, nans, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, levels, (rows, vocab), generator=gen).float()  # many ties
    for _ in range(nans):
        logits[
            torch.randint(rows, (1,), generator=gen), torch.randint(vocab, (1,), generator=gen)
        ] = math.nan
    assert torch.equal(argmax_rows(logits, chunk), logits.argmax(dim=-1))


def test_temperature_sampling_follows_the_distribution():
    torch.manual_seed(0)  # unseeded rows draw from torch's global generator: fix it
    # p = (0.25, 0.75) at temperature 1; the bounds are 4.4 std of the share (0.0068)
    tokens = _draws([0.0, math.log(3.0)], SamplingParams(temperature=1.0), 4000)
    share = sum(tokens) / len(tokens)
    assert 0.72 < share < 0.78
    # a low temperature sharpens towards the top token
    cold = _draws([0.0, math.log(3.0)], SamplingParams(temperature=0.25), 2000)
    assert sum(cold) / len(cold) > 0.95


def test_top_k_and_top_p_restrict_the_candidates():
    logits = [4.0, 3.0, 2.0, 1.0, 0.0]
    assert set(_draws(logits, SamplingParams(temperature=5.0, top_k=2), 500)) == {0, 1}
    # probabilities at temperature 1: 0.64, 0.24, 0.09, ...: top_p 0.8 keeps tokens 0 and 1
    assert set(_draws(logits, SamplingParams(top_p=0.8), 1000)) == {0, 1}
    assert set(_draws(logits, SamplingParams(top_p=0.5), 200)) == {0}
    assert len(set(_draws(logits, SamplingParams(temperature=5.0), 500))) == 5


def test_seed_makes_a_request_reproducible():
    logits = torch.zeros(1, 1000)
    params = SamplingParams(seed=42)
    first = [sample(logits.clone(), [s])[0][0] for s in [_seq(params)] for _ in range(20)]
    seq = _seq(params)
    again = [sample(logits.clone(), [seq])[0][0] for _ in range(20)]
    other = _seq(SamplingParams(seed=7))
    different = [sample(logits.clone(), [other])[0][0] for _ in range(20)]
    assert first == again and first != different


def test_repetition_and_presence_penalties():
    logits = torch.tensor([[2.0, 1.9, -1.0, 0.0]])
    # token 0 is in the prompt: divided by the penalty it drops below token 1
    seq = _seq(SamplingParams(temperature=0, repetition_penalty=1.5), prompt=(0,))
    assert sample(logits.clone(), [seq])[0] == [1]
    # presence penalty applies to generated tokens only, not to the prompt
    in_prompt = _seq(SamplingParams(temperature=0, presence_penalty=1.0), prompt=(0,))
    assert sample(logits.clone(), [in_prompt])[0] == [0]
    generated = _seq(SamplingParams(temperature=0, presence_penalty=1.0), prompt=(3,), output=(0,))
    assert sample(logits.clone(), [generated])[0] == [1]
    # negative logits are multiplied by the penalty: token 2 goes further down
    row = logits[0].clone()
    from nodes.llm.sampling import apply_penalties

    apply_penalties(row, [2], 1, SamplingParams(repetition_penalty=2.0))
    assert row[2].item() == -2.0


def test_logprobs_of_the_chosen_tokens():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    expected = logits.log_softmax(-1)
    params = SamplingParams(temperature=0, logprobs=True)
    scored = SamplingParams(temperature=0, score_token_ids=(0, 2))
    tokens, logprobs, scores, _ = sample(logits.clone(), [_seq(params), _seq(scored)])
    assert tokens == [1, 2]
    assert logprobs == pytest.approx([expected[0, 1].item(), expected[1, 2].item()])
    assert scores[0] is None
    assert scores[1] == pytest.approx([expected[1, 0].item(), expected[1, 2].item()])


def test_sampling_params_are_checked():
    for bad in ({"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": -1},
                {"repetition_penalty": 0}, {"stop": ("",)}):  # fmt: skip
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(stop="###").stop == ("###",)
