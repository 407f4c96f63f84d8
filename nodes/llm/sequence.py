"""One request inside the engine: its tokens, how many are computed, its KV blocks and its state."""

from __future__ import annotations

import enum

import torch

from nodes.llm.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """Prompt plus generated tokens; `num_computed_tokens` of them have K/V in `block_table`."""

    __slots__ = tuple(
        "request_id token_ids num_prompt_tokens num_computed_tokens "  # noqa: SIM905
        "num_cached_tokens block_table block_hashes status params finish_reason logprobs "
        "generator text sent_chars prefix_offset read_offset arrival num_preemptions "
        "num_draft grammar".split()
    )

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams, arrival):
        self.request_id = request_id
        self.token_ids = list(prompt_ids)
        self.num_prompt_tokens = len(prompt_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained hashes of the full, computed blocks
        self.status = Status.WAITING
        self.params = params
        self.finish_reason: str | None = None
        self.logprobs: list[float] = []
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)
        self.text = ""  # detokenized output so far
        self.sent_chars = 0  # characters of `text` already handed out
        self.prefix_offset = max(0, len(prompt_ids) - 5)  # incremental detokenization window
        self.read_offset = len(prompt_ids)
        self.arrival = arrival
        self.num_preemptions = 0
        self.num_draft = 0  # speculative proposals at the end of token_ids, this step only
        self.grammar = None  # xgrammar matcher of a structured-output request

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens
