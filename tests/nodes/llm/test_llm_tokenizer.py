"""The tokenizer's cheap length bound: a text is refused as too long only when it certainly has
more tokens than the limit, so the bound must never claim more tokens than the text has."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.llm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return Tokenizer(smollm2_path)


def _worst_cases(tokenizer):
    longest = max(range(len(tokenizer.hf)), key=lambda i: len(tokenizer.token_text(i).encode()))
    yield tokenizer.token_text(longest) * 50  # the longest token, repeated
    yield "<|im_start|>" * 200  # special tokens: long text, one token each
    yield "\n" + " " * 5000
    yield "é漢字🙂" * 300
    yield "word " * 1000


def test_the_bound_never_claims_more_tokens_than_there_are(tokenizer):
    assert tokenizer.max_token_bytes >= len("<|im_start|>")
    for text in _worst_cases(tokenizer):
        tokens = len(tokenizer.encode(text))
        assert not tokenizer.surely_longer_than(text, tokens), text[:40]
    huge = "word " * 1_000_000
    assert tokenizer.surely_longer_than(huge, 2048)  # 5 MB: certainly past 2,048 tokens


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=400))
def test_the_bound_holds_for_any_text(tokenizer, text):
    assert not tokenizer.surely_longer_than(text, len(tokenizer.encode(text)))
