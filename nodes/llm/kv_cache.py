"""KV blocks: allocation with reference counts, block tables, and prefix caching.

A full, computed block is registered under a chained hash of (previous block's hash, its tokens),
so a later request with the same prefix reuses it. Freed blocks that carry a hash stay in an LRU
and are only evicted (their hash forgotten) when no plain free block is left.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from nodes.llm.sequence import Sequence


class BlockManager:
    """Hands out blocks to sequences; shared prefix blocks are reference counted."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.hash_to_block: dict[int, int] = {}
        self.free_plain: deque[int] = deque(range(num_blocks))
        self.free_cached: OrderedDict[int, None] = OrderedDict()  # LRU: oldest first
        self.cache_queries = 0
        self.cache_hits = 0

    @property
    def num_free(self) -> int:
        return len(self.free_plain) + len(self.free_cached)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take(self) -> int:
        if self.free_plain:
            block = self.free_plain.popleft()
        else:
            block, _ = self.free_cached.popitem(last=False)
            del self.hash_to_block[self.block_hash[block]]
            self.block_hash[block] = self.block_tokens[block] = None
        assert self.ref_counts[block] == 0, f"block {block} handed out while held"
        self.ref_counts[block] = 1
        return block

    def _release(self, block: int) -> None:
        self.ref_counts[block] -= 1
        assert self.ref_counts[block] >= 0, f"block {block} released twice"
        if self.ref_counts[block] == 0:
            if self.block_hash[block] is None:
                self.free_plain.append(block)
            else:
                self.free_cached[block] = None

    def _match(self, seq: Sequence) -> list[int]:
        """Cached blocks for the sequence's leading full blocks, leaving one token to compute."""
        if not self.enable_prefix_caching:
            return []
        bs, tokens, blocks, h = self.block_size, seq.token_ids, [], None
        for i in range((len(tokens) - 1) // bs):
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = hash((h, chunk))
            block = self.hash_to_block.get(h)
            if block is None or self.block_tokens[block] != chunk:
                break
            blocks.append(block)
        return blocks

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        """Whether all of the sequence's tokens get blocks, leaving `reserve` blocks free."""
        shared = sum(1 for b in self._match(seq) if self.ref_counts[b] > 0)
        return self.num_free - (self.blocks_needed(len(seq)) - shared) >= reserve

    def allocate(self, seq: Sequence) -> None:
        """Blocks for every token of the sequence; cached prefix blocks count as computed."""
        assert not seq.block_table
        hits = self._match(seq)
        for block in hits:
            if self.ref_counts[block] == 0:
                del self.free_cached[block]
            self.ref_counts[block] += 1
        seq.block_table = hits + [
            self._take() for _ in range(self.blocks_needed(len(seq)) - len(hits))
        ]
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * self.block_size
        seq.block_hashes = [self.block_hash[b] for b in hits]
        self.cache_queries += len(seq) - 1
        self.cache_hits += seq.num_cached_tokens

    def can_append(self, seq: Sequence) -> bool:
        return self.num_free >= self.blocks_needed(len(seq)) - len(seq.block_table)

    def append(self, seq: Sequence) -> None:
        """Grow the block table to hold every token of the sequence (the newly sampled one)."""
        for _ in range(self.blocks_needed(len(seq)) - len(seq.block_table)):
            seq.block_table.append(self._take())

    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Release the tail blocks beyond the first `num_tokens` tokens (rejected speculative
        tokens: not yet committed, so never in the prefix cache)."""
        keep = self.blocks_needed(num_tokens)
        while len(seq.block_table) > keep:
            self._release(seq.block_table.pop())

    def commit(self, seq: Sequence) -> None:
        """Register the hashes of blocks that became full and computed."""
        if not self.enable_prefix_caching:
            return
        bs, hashes = self.block_size, seq.block_hashes
        for i in range(len(hashes), seq.num_computed_tokens // bs):
            chunk = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = hash((hashes[-1] if hashes else None, chunk))
            hashes.append(h)
            block = seq.block_table[i]
            if self.block_hash[block] is None and h not in self.hash_to_block:
                self.block_hash[block], self.block_tokens[block] = h, chunk
                self.hash_to_block[h] = block

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's hold on its blocks, tail first: prefixes stay cached longest."""
        for block in reversed(seq.block_table):
            self._release(block)
        seq.block_table = []
        seq.block_hashes = []
