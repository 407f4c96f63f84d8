"""LLM-judge relevance scores: how likely the model answers "yes" to "is this passage relevant to
the query?", read from the next-token distribution after the prompt (prefill only, nothing is
generated). Runs on the nodes/llm engine, so the prompts of a batch are batched continuously and
the shared beginning of the prompts (chat preamble and query, which comes first) is computed once
per query through the prefix cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# First tokens of an affirmative / negative answer, with and without a leading space.
YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES")
NO_WORDS = ("no", "No", " no", " No", "NO")


class LLMJudgeScorer:
    """Scores (query, passage) pairs as log P(yes) - log P(no) for the answer's first token."""

    def __init__(
        self,
        model: Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        prompt: str,
        chat: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
        kv_cache_mb: int = 256,
        quantization: str = "auto",
    ):
        from nodes.llm import shared
        from nodes.llm.config import EngineConfig

        if not Path(model).exists():
            raise FileNotFoundError(f"{model}: no such LLM file or folder for the llm_judge")
        config = EngineConfig(
            dtype=dtype,
            device=device,
            kv_cache_bytes=kv_cache_mb << 20,
            max_num_seqs=batch_size,
            max_num_batched_tokens=max(2048, batch_size),
            quantization=quantization,
        )
        # shared with an `llm` node (or another judge) of the same model and engine config
        self.engine = shared.acquire(model, config)
        self.tokenizer = self.engine.tokenizer
        self.prompt = prompt
        self.chat = chat
        self.max_length = max_length
        self.yes_ids = self._first_tokens(YES_WORDS)
        self.no_ids = self._first_tokens(NO_WORDS)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError("the model's tokenizer gives 'yes' and 'no' the same first token")

    def _first_tokens(self, words: tuple[str, ...]) -> list[int]:
        hf = self.tokenizer.hf
        return sorted({hf.encode(w, add_special_tokens=False)[0] for w in words})

    def _cut(self, passage: str) -> str:
        """The passage, cut to `max_length` tokens."""
        hf = self.tokenizer.hf
        ids = hf.encode(passage, add_special_tokens=False)
        return passage if len(ids) <= self.max_length else hf.decode(ids[: self.max_length])

    def render(self, query: str, passage: str) -> list[int]:
        """The prompt's token ids: the question, in the chat template when `chat` is set."""
        text = self.prompt.format(query=query, passage=self._cut(passage))
        if self.chat and self.tokenizer.hf.chat_template:
            return self.tokenizer.apply_chat([{"role": "user", "content": text}])
        return self.tokenizer.hf.encode(text)

    def score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        """One FP32 score per pair, in order. The first pair of each query goes first, alone:
        once its blocks are cached, the query's other pairs reuse its prefix (pairs prefilled
        in the same step could not share it)."""
        prompts = [self.render(q, p) for q, p in zip(queries, passages, strict=True)]
        ids = self.yes_ids + self.no_ids
        lead = sorted({q: i for i, q in reversed(list(enumerate(queries)))}.values())
        rest = sorted(set(range(len(prompts))) - set(lead))
        rows: list[list[float]] = [[] for _ in prompts]
        for part in (lead, rest):
            if part:
                scored = self.engine.score_next_token([prompts[i] for i in part], ids)
                for i, row in zip(part, scored, strict=True):
                    rows[i] = row
        n_yes = len(self.yes_ids)
        out = np.empty(len(prompts), dtype=np.float32)
        for i, row in enumerate(rows):
            out[i] = _logsumexp(row[:n_yes]) - _logsumexp(row[n_yes:])
        return out

    def close(self) -> None:
        from nodes.llm import shared

        shared.release(self.engine)


def _logsumexp(values) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))
