"""The engine end to end on a tiny random Llama: batch invariance (alone, among 32 others, after a
prefix-cache hit, after preemption), stops, streaming with abort, and block accounting."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import torch

from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


def _engine(folder, **overrides) -> LLMEngine:
    config = {"dtype": "fp32", "block_size": 4, "kv_cache_bytes": 4 << 20, "max_num_seqs": 64,
                  "max_num_batched_tokens": 256, "max_model_len": 256}  # fmt: skip
    config.update(overrides)
    return LLMEngine(folder, EngineConfig(**config))


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n,), generator=gen).tolist()
    return [torch.randint(3, 40000, (k,), generator=gen).tolist() for k in lengths]


@pytest.fixture(scope="module")
def alone(tiny_model_dir):
    """Greedy tokens of each of 33 prompts, each generated alone."""
    engine = _engine(tiny_model_dir)
    prompts = _prompts(33)
    try:
        return prompts, [engine.generate([p], GREEDY)[0].token_ids for p in prompts]
    finally:
        engine.shutdown()


def test_batch_invariance_among_others_and_after_prefix_hit(tiny_model_dir, alone):
    prompts, expected = alone
    engine = _engine(tiny_model_dir, max_num_batched_tokens=64)  # chunked prefill too
    try:
        together = engine.generate(prompts, GREEDY)
        assert [c.token_ids for c in together] == expected
        again = engine.generate(prompts[:5], GREEDY)  # their full blocks are in the prefix cache
        assert [c.token_ids for c in again] == expected[:5]
        assert all(c.cached_tokens > 0 for c, p in zip(again, prompts) if len(p) > 4)
    finally:
        engine.shutdown()


def test_batch_invariance_after_preemption(tiny_model_dir, alone):
    prompts, expected = alone
    # 40 blocks of 4 tokens cannot hold 33 requests of up to 51 tokens: preemption is forced
    small = _engine(tiny_model_dir, kv_cache_bytes=40 * 2 * 2 * 4 * 2 * 32 * 4)
    try:
        assert small.blocks.num_blocks == 40
        together = small.generate(prompts, GREEDY)
        assert small.scheduler.num_preemptions > 0
        assert [c.token_ids for c in together] == expected
        assert small.blocks.num_free == small.blocks.num_blocks
    finally:
        small.shutdown()


def test_stop_strings_stop_tokens_and_max_tokens(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    prompt = _prompts(1, seed=3)[0]
    try:
        base = engine.generate(
            [prompt], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
        )[0]
        assert base.finish_reason == "length" and base.completion_tokens == 20
        stop_token = base.token_ids[5]
        by_token = SamplingParams(max_tokens=20, temperature=0, stop_token_ids=(stop_token,))
        cut = engine.generate([prompt], by_token)[0]
        assert cut.finish_reason == "stop"
        assert cut.token_ids == base.token_ids[: base.token_ids.index(stop_token) + 1]
        stop = base.text[len(base.text) // 2 :][:3]
        assert stop.strip(), base.text
        by_text = engine.generate(
            [prompt], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, stop=stop)
        )[0]
        assert by_text.finish_reason == "stop"
        assert by_text.text == base.text[: base.text.index(stop)]
    finally:
        engine.shutdown()


def test_stream_matches_generate_and_abort_frees_blocks(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    prompt = _prompts(1, seed=4)[0]
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, logprobs=True)

    async def collect(limit=None):
        deltas = []
        async with contextlib.aclosing(engine.stream(prompt, params)) as stream:
            async for delta in stream:
                deltas.append(delta)
                if limit and len(deltas) == limit:
                    break  # closing the stream aborts the request
        return deltas

    try:
        whole = engine.generate([prompt], params)[0]
        deltas = asyncio.run(collect())
        assert "".join(d.text for d in deltas) == whole.text
        assert [t for d in deltas for t in d.token_ids] == whole.token_ids
        assert deltas[-1].finished and deltas[-1].completion_tokens == 10
        assert len(whole.logprobs) == 10 and all(lp <= 0 for lp in whole.logprobs)
        asyncio.run(collect(limit=3))  # leaves early: aborted
        for _ in range(200):  # the loop thread frees the blocks at its next step
            if not engine.scheduler.has_work() and engine._inbox.empty():
                break
            asyncio.run(asyncio.sleep(0.01))
        assert not engine.scheduler.has_work()
        assert engine.blocks.num_free == engine.blocks.num_blocks
    finally:
        engine.shutdown()


def test_score_next_token_gives_next_token_logprobs(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    prompts = _prompts(3, seed=5)
    try:
        rows = engine.score_next_token(prompts, [10, 20, 30])
        greedy = engine.generate(
            prompts, SamplingParams(max_tokens=1, temperature=0, logprobs=True)
        )
        for row, prompt, first in zip(rows, prompts, greedy):
            assert len(row) == 3 and all(lp <= 0 for lp in row)
            scored = engine.score_next_token([prompt], [first.token_ids[0]])[0][0]
            assert scored == pytest.approx(first.logprobs[0], abs=1e-5)
        stats = engine.statistics()
        assert stats["kv_blocks_used"] == 0 and stats["generated_tokens"] >= 9
    finally:
        engine.shutdown()


def test_rejects_prompts_that_cannot_fit(tiny_model_dir):
    engine = _engine(tiny_model_dir, max_model_len=32)
    with pytest.raises(ValueError, match="max_model_len"):
        engine.generate([list(range(3, 40))], GREEDY)
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([[]], GREEDY)


def test_max_model_len_is_the_models_unless_set_and_never_above_it(tmp_path, save_llama,
                                                                    smollm2_tokenizer):  # fmt: skip
    save_llama(tmp_path, smollm2_tokenizer, max_position_embeddings=48)
    unset = _engine(tmp_path, max_model_len=None)  # min(2048, 48): tiny models stay servable
    try:
        assert unset.max_model_len == 48
        done = unset.generate([list(range(3, 43))], GREEDY)[0]  # 40 + 12 > 48: stops at 48
        assert done.finish_reason == "length" and done.completion_tokens == 8
    finally:
        unset.shutdown()
    assert _engine(tmp_path, max_model_len=32).max_model_len == 32
    with pytest.raises(ValueError) as caught:
        _engine(tmp_path, max_model_len=64)  # vLLM refuses it too; it was lowered to 48
    assert "max_model_len 64 is more than the model's max_position_embeddings 48" in str(
        caught.value
    )


def _raise_in_thread(thread, exc_type) -> None:
    """Deliver `exc_type` asynchronously in `thread` (as a Ctrl-C or a killed worker would)."""
    import ctypes

    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )
    assert hit == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it dies
def test_a_dead_step_loop_fails_its_requests_and_is_never_shared_again(tiny_model_dir):
    """Its thread lost (KeyboardInterrupt), the engine ends every stream with InstanceLost (they
    waited forever), refuses new requests, and the shared pool loads a fresh engine."""
    from nodes.errors import InstanceLost
    from nodes.llm import shared

    config = EngineConfig(dtype="fp32", block_size=4, kv_cache_bytes=4 << 20, max_model_len=256)
    engine = shared.acquire(tiny_model_dir, config)
    long = SamplingParams(max_tokens=240, temperature=0, ignore_eos=True)

    async def both():
        streams = [engine.stream([3, 4, 5], long), engine.stream([6, 7, 8, 9], long)]
        for deltas in streams:
            await anext(deltas)  # both under way
        _raise_in_thread(engine._thread, KeyboardInterrupt)
        for deltas in streams:
            with pytest.raises(InstanceLost, match="step loop died"):
                async for _ in deltas:
                    pass

    try:
        asyncio.run(asyncio.wait_for(both(), 300))
        assert isinstance(engine.lost, KeyboardInterrupt)
        with pytest.raises(InstanceLost):
            engine.generate([[3, 4, 5]], GREEDY)
        fresh = shared.acquire(tiny_model_dir, config)
        try:
            assert fresh is not engine and fresh.lost is None
            assert fresh.generate([[3, 4, 5]], GREEDY)[0].completion_tokens == 12
        finally:
            shared.release(fresh)
    finally:
        shared.release(engine)
