"""Speculative decoding by prompt lookup (n-gram): no draft model. When the last n tokens of a
sequence occurred earlier in it (prompt or output), the tokens that followed them then are
proposed as the next ones. RAG answers copy spans of their passages, so proposals often hold.

One step verifies a sequence's k proposed tokens as one chunk [last token, d1..dk] with logits
at every position; the target token at each position is what the sampler picks given the
tokens before it, exactly as one-token decoding would. The proposals are accepted up to the
first mismatch, and the target token there (or after dk) is appended too: 1 to k+1 tokens per
step. Rejected proposals roll back: their tokens go, their KV slots count as uncomputed (and
are overwritten later), and blocks that held only them are freed.

Only greedy requests speculate: for them the output is token-identical with speculation off.
Sampled requests (temperature > 0) decode one token per step, as without speculation (vLLM
verifies those by rejection sampling; not done here). Source: Saxena, "Prompt Lookup Decoding"
(2023); vLLM's `speculative_config` with `method: ngram` names the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SpeculativeConfig:
    """`num_speculative_tokens` (k) proposed per step; n-grams of `prompt_lookup_min` to
    `prompt_lookup_max` tokens are looked up, the longest first (vLLM's defaults: 5 and 5 when
    neither is given, else the one given for both)."""

    num_speculative_tokens: int
    prompt_lookup_max: int | None = None
    prompt_lookup_min: int | None = None
    method: str = "ngram"

    def __post_init__(self):
        if self.method != "ngram":
            raise ValueError(f"speculative method {self.method!r} unsupported; methods: ngram")
        lo, hi = self.prompt_lookup_min, self.prompt_lookup_max
        lo, hi = (5, 5) if lo is None and hi is None else (lo or hi, hi or lo)
        object.__setattr__(self, "prompt_lookup_min", lo)
        object.__setattr__(self, "prompt_lookup_max", hi)
        if self.num_speculative_tokens < 1:
            raise ValueError(
                f"num_speculative_tokens must be >= 1, got {self.num_speculative_tokens}"
            )
        if not 1 <= lo <= hi:  # type: ignore[operator]
            raise ValueError(f"need 1 <= prompt_lookup_min ({lo}) <= prompt_lookup_max ({hi})")


def propose_ngram(tokens: list[int], k: int, n_min: int, n_max: int) -> list[int]:
    """Up to `k` tokens that followed the most recent earlier occurrence of the sequence's last
    n tokens, for the largest n in [n_min, n_max] that occurs; [] when none does."""
    size = len(tokens)
    if k < 1 or size <= n_min:
        return []
    arr = np.asarray(tokens, dtype=np.int64)
    for n in range(min(n_max, size - 1), n_min - 1, -1):
        # windows starting at 0..size-n-1: every earlier occurrence, not the suffix itself
        windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
        hits = np.flatnonzero((windows == arr[size - n :]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return tokens[start : start + k]
    return []


class DraftRow:
    """A verification row as the sampler sees a sequence: the request's params and generator,
    and its tokens up to this row's position (the proposals before it included)."""

    __slots__ = ("generator", "num_prompt_tokens", "params", "token_ids")

    def __init__(self, seq, num_tokens: int):
        self.params = seq.params
        self.token_ids = seq.token_ids[:num_tokens]
        self.num_prompt_tokens = seq.num_prompt_tokens
        self.generator = seq.generator

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


def verification_rows(samplers: list) -> tuple[list, list[tuple[int, int]]]:
    """The sampler's rows for a step's sampling sequences: one per sequence, or 1 + d for one
    with d proposals. Returns (rows, per sequence its (first row, row count))."""
    rows: list = []
    spans: list[tuple[int, int]] = []
    for seq in samplers:
        d = seq.num_draft
        spans.append((len(rows), 1 + d))
        if not d:
            rows.append(seq)
            continue
        base = len(seq.token_ids) - d
        rows.extend(DraftRow(seq, base + j) for j in range(d + 1))
    return rows, spans


def accept(drafts: list[int], targets: list[int]) -> list[int]:
    """The tokens a step yields: the proposals up to the first that differs from its target,
    then the target there (or after the last proposal). `targets` has len(drafts) + 1."""
    a = 0
    while a < len(drafts) and drafts[a] == targets[a]:
        a += 1
    return targets[: a + 1]
