"""Logits of our paged Llama against transformers' LlamaForCausalLM on tiny random models (fp32)."""

from __future__ import annotations

import pytest
import torch

from nodes.errors import InvalidConfig
from nodes.llm.config import EngineConfig, ModelConfig, derive_max_model_len
from nodes.llm.kv_cache import BlockManager
from nodes.llm.runner import ModelRunner
from nodes.llm.sampling import SamplingParams
from nodes.llm.sequence import Sequence
from nodes.llm.weights import load_weights

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
CASES = {
    "gqa-tied": {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "mqa-untied-llama3": {
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
        "rope_scaling": LLAMA3,
    },
    "mha-untied-theta": {
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
}


def _all_logits(runner, batch):
    """Logits at every token of the batch (the engine only asks for sampling positions)."""
    input_ids, positions, meta, _, _ = runner.prepare(batch)
    every = torch.arange(len(input_ids))
    return runner.model.forward(input_ids, positions, meta, runner.kv_caches, every)


@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto: the C kernel where it builds
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, save_llama, case, backend):
    hf = save_llama(tmp_path, **CASES[case])
    model_config, weights = load_weights(tmp_path)
    config = EngineConfig(
        dtype="fp32", block_size=4, kv_cache_bytes=1 << 20, max_num_seqs=4,
        max_num_batched_tokens=64, max_model_len=256, attention_backend=backend,
    )  # fmt: skip
    runner = ModelRunner(model_config, weights, config)
    blocks = BlockManager(runner.num_blocks, config.block_size)
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(3, 320, (23,), generator=gen).tolist()  # several blocks, not block-aligned
    b = torch.randint(3, 320, (9,), generator=gen).tolist()
    with torch.no_grad():
        ref_a = hf(torch.tensor([a + [7]])).logits[0]
        ref_b = hf(torch.tensor([b])).logits[0]
    seq_a, seq_b = Sequence("a", a, SamplingParams(), 0), Sequence("b", b, SamplingParams(), 0)
    blocks.allocate(seq_a)
    blocks.allocate(seq_b)
    # a in two prefill chunks (the second reads the first from the cache), b whole, in one batch
    got = _all_logits(runner, [(seq_a, 10), (seq_b, 9)])
    seq_a.num_computed_tokens, seq_b.num_computed_tokens = 10, 9
    assert (got[:10] - ref_a[:10]).abs().max() <= 1e-4
    assert (got[10:] - ref_b).abs().max() <= 1e-4
    got = _all_logits(runner, [(seq_a, 13)])
    seq_a.num_computed_tokens = 23
    assert (got - ref_a[10:23]).abs().max() <= 1e-4
    # one decode step of a beside b's decode
    seq_a.token_ids.append(7)
    blocks.append(seq_a)
    seq_b.token_ids.append(11)
    blocks.append(seq_b)
    with torch.no_grad():
        ref_b2 = hf(torch.tensor([b + [11]])).logits[0, -1]
    got = _all_logits(runner, [(seq_a, 1), (seq_b, 1)])
    assert (got[0] - ref_a[23]).abs().max() <= 1e-4
    assert (got[1] - ref_b2).abs().max() <= 1e-4


def test_model_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=3,
                    num_kv_heads=2)  # fmt: skip
    with pytest.raises(ValueError, match="rope_type"):
        ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=2,
                    num_kv_heads=2, rope_scaling=(("rope_type", "yarn"),))  # fmt: skip


def test_engine_config_checks():
    with pytest.raises(ValueError, match="dtype"):
        EngineConfig(dtype="fp8")
    with pytest.raises(ValueError, match="power of two"):
        EngineConfig(block_size=12)
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineConfig(max_num_seqs=64, max_num_batched_tokens=32)


def test_a_max_model_len_above_the_model_fails_before_any_weight_is_read(tmp_path, save_llama):
    save_llama(tmp_path, **CASES["gqa-tied"])
    for weights_file in tmp_path.glob("*.safetensors"):
        weights_file.write_bytes(b"not safetensors")  # reading it would fail differently
    with pytest.raises(InvalidConfig, match="max_model_len 1000000 is more than") as info:
        load_weights(tmp_path, check=lambda c: derive_max_model_len(1_000_000, c))
    assert info.value.field == "max_model_len"
