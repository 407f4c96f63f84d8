"""Continuous batching: one token budget per step, running decodes first, then prefill chunks.

When a decode needs a block and none is free, the running sequence with the least progress is
preempted by recompute: its blocks are freed (full ones stay in the prefix cache) and it waits at
the head of the queue. New sequences are admitted only with a reserve of one block per running
sequence and never in a step that preempted, so that admitting does not cause the next preemption.
"""

from __future__ import annotations

from collections import deque

from nodes.llm.config import EngineConfig
from nodes.llm.kv_cache import BlockManager
from nodes.llm.sequence import Sequence, Status
from nodes.llm.speculative import propose_ngram


class Scheduler:
    """Chooses, each step, which sequences compute how many tokens."""

    def __init__(self, config: EngineConfig, blocks: BlockManager, max_model_len: int = 0):
        self.max_num_seqs = config.max_num_seqs
        self.max_model_len = max_model_len or config.max_model_len
        self.speculative = config.speculative
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """The step's batch as (sequence, tokens to compute): decodes first, then prefill chunks."""
        budget = self.max_num_batched_tokens
        batch: list[tuple[Sequence, int]] = []
        chosen: set[int] = set()
        preempted = False
        decodes = [s for s in self.running if s.num_uncomputed == 1]
        partial = [s for s in self.running if s.num_uncomputed > 1]
        for index, seq in enumerate(decodes + partial):
            if budget == 0:
                break
            if seq.status is not Status.RUNNING:  # preempted earlier in this loop
                continue
            while not self.blocks.can_append(seq):
                victim = min(
                    (s for s in self.running if id(s) not in chosen),
                    key=lambda s: (s.num_output_tokens, s.num_computed_tokens, -s.arrival),
                )
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:
                continue
            self.blocks.append(seq)
            n = min(seq.num_uncomputed, budget)
            if n == 1 and self.speculative is not None:
                n += self._propose(seq, budget - 1, reserve=len(decodes) - index - 1)
            batch.append((seq, n))
            chosen.add(id(seq))
            budget -= n
        while self.waiting and budget > 0 and not preempted:
            if len(self.running) >= self.max_num_seqs:
                break
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq, reserve=len(self.running)):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed, budget)
            batch.append((seq, n))
            budget -= n
        return batch

    def _propose(self, seq: Sequence, room: int, reserve: int) -> int:
        """Append a greedy decode's n-gram proposals to its tokens (`seq.num_draft` of them),
        within the step's `room`, its max_tokens and max_model_len, and the KV blocks free
        beyond `reserve` (one per decode still to schedule); the number proposed."""
        spec, params = self.speculative, seq.params
        if not params.greedy or seq.grammar is not None:  # a grammar is checked token by token
            return 0
        limit = min(spec.num_speculative_tokens, room,
                    params.max_tokens - seq.num_output_tokens - 1,
                    self.max_model_len - len(seq) - 1)  # fmt: skip
        if limit < 1:
            return 0
        drafts = propose_ngram(seq.token_ids, limit, spec.prompt_lookup_min, spec.prompt_lookup_max)
        bs = self.blocks.block_size
        room_in_blocks = len(seq.block_table) * bs - len(seq)
        room_in_blocks += max(0, self.blocks.num_free - reserve) * bs
        drafts = drafts[:room_in_blocks]
        if drafts:
            seq.token_ids += drafts
            seq.num_draft = len(drafts)
            self.blocks.append(seq)
        return len(drafts)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take a sequence out (finished or aborted) and free its blocks at once."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.blocks.free(seq)
        elif seq.status is Status.WAITING:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
