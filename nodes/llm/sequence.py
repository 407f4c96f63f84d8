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

    __slots__ = (
        "arrival",
        "block_hashes",
        "block_table",
        "finish_reason",
        "first_token_time",
        "generator",
        "logprobs",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "params",
        "prefix_offset",
        "read_offset",
        "request_id",
        "sent_chars",
        "status",
        "text",
        "token_ids",
    )  # fmt: skip

    def __init__(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, arrival: float
    ):
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
        self.first_token_time: float | None = None
        self.num_preemptions = 0

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
