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


@pytest.mark.parametrize("text", ["日本語 and emoji 😀🌍", "café ☕ naïve", "plain words"])
def test_token_bytes_rebuild_characters_split_over_tokens(tokenizer, text):
    """OpenAI's logprobs `bytes`: the token's own UTF-8 bytes, so that the tokens' bytes joined
    are the text even where a character spans tokens (not U+FFFD's EF BF BD for each part)."""
    ids = tokenizer.encode(text)
    parts = [tokenizer.token_bytes(i) for i in ids]
    assert b"".join(parts) == text.encode()
    if len(ids) > len(text.split()) + 2:  # some character is split over tokens
        assert any(p != b"\xef\xbf\xbd" and "\ufffd" in tokenizer.token_text(i)
                   for p, i in zip(parts, ids, strict=True))  # fmt: skip


def test_token_bytes_of_special_tokens_are_their_text(tokenizer):
    eos = tokenizer.eos_token_id
    assert tokenizer.token_bytes(eos) == tokenizer.token_text(eos).encode() == b"<|im_end|>"


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=200))
def test_token_bytes_join_to_the_text_for_any_text(tokenizer, text):
    ids = tokenizer.hf.encode(text, add_special_tokens=False)
    if tokenizer.decode(ids) == text:  # normalization aside, the tokens spell the text
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode()
