"""Block accounting as a property: random submits, steps and aborts through the real engine on a
tiny model with a small KV cache and shared prefixes. No writable block ever has two owners,
reference counts equal the holders, and every block is free at the end."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

PREFIXES = [list(range(100, 112)), list(range(200, 209)), []]

ops = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.integers(1, 20), st.integers(1, 30)),
    st.tuples(st.just("step"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("abort"), st.integers(0, 1000), st.just(0), st.just(0)),
)


def new_engine(tiny_model_dir):
    config = EngineConfig(dtype="fp32", block_size=4, kv_cache_bytes=24 * 2 * 2 * 4 * 2 * 32 * 4,
                          max_num_seqs=8, max_num_batched_tokens=24, max_model_len=64)  # fmt: skip
    engine = LLMEngine(tiny_model_dir, config)
    assert engine.blocks.num_blocks == 24
    return engine


def check_blocks(engine: LLMEngine) -> None:
    blocks = engine.blocks
    holders: Counter[int] = Counter()
    for seq in engine.scheduler.running:
        assert len(set(seq.block_table)) == len(seq.block_table), "a sequence holds a block twice"
        # every computed token has a slot; the token sampled last gets its block next step
        assert len(seq.block_table) * blocks.block_size >= max(
            len(seq) - 1, seq.num_computed_tokens
        )
        holders.update(seq.block_table)
    for seq in engine.scheduler.waiting:
        assert not seq.block_table
    free = list(blocks.free_plain) + list(blocks.free_cached)
    assert len(free) == len(set(free)), "a block is free twice"
    for b in range(blocks.num_blocks):
        assert blocks.ref_counts[b] == holders[b], f"block {b}: refs vs holders"
        assert (b in set(free)) == (holders[b] == 0)
        if holders[b] > 1:  # shared only as an immutable, hashed prefix block
            assert blocks.block_hash[b] is not None, f"writable block {b} has {holders[b]} owners"
    for h, b in blocks.hash_to_block.items():
        assert blocks.block_hash[b] == h


# no shrinking: a 500-step program with model runs shrinks for many minutes; the failure prints it
@settings(max_examples=2, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(ops, min_size=500, max_size=500))
def test_random_submit_step_abort_keeps_blocks_consistent(tiny_model_dir, program):
    engine = new_engine(tiny_model_dir)
    submitted: list[str] = []
    for op, a, b, c in program:
        if op == "submit":
            prompt = PREFIXES[a] + list(range(300 + b, 300 + b + b % 7 + 1))
            params = SamplingParams(max_tokens=c, temperature=0, ignore_eos=True)
            submitted.append(engine.add_request(prompt, params))
        elif op == "step":
            engine.step()
        elif submitted:
            engine.abort(submitted[a % len(submitted)])
        check_blocks(engine)
    for rid in submitted:
        engine.abort(rid)
    engine.step()
    check_blocks(engine)
    assert not engine.scheduler.has_work()
    assert engine.blocks.num_free == engine.blocks.num_blocks
