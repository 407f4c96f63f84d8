"""Weights and config from a Hugging Face folder (config.json + safetensors) or a GGUF file.

Tensors come back under Hugging Face names without the `model.` prefix
(`layers.0.self_attn.q_proj.weight`), as float32 on CPU; the model casts them to its dtype. With
`keep_quantized`, GGUF Q8_0/Q4_0/Q4_1 matrices come back as `QuantizedWeight` (codes, scales,
offsets read straight from ggml's blocks, see nodes/llm/quant.py) instead of being dequantized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nodes.llm.config import ModelConfig
from nodes.llm.quant import GROUP, QuantizedWeight

_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_TOP_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "rope_freqs.weight": "rope_freqs",
}
_GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")


def load_weights(
    path: str | Path,
    keep_quantized: bool = False,
    check: Callable[[ModelConfig], object] | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor | QuantizedWeight]]:
    """The model config and float32 tensors of a HF folder or a `.gguf` file; with
    `keep_quantized`, GGUF's quantized matrices as `QuantizedWeight`. `check` sees the config
    before any tensor is read: what it raises (say a max_model_len above the model's) fails the
    load at once, as vLLM refuses from the config before loading weights."""
    path = Path(path)
    if path.is_dir():
        return _load_hf_folder(path, check)
    if path.suffix == ".gguf" and path.is_file():
        return _load_gguf(path, keep_quantized, check)
    raise FileNotFoundError(f"{path}: expected a Hugging Face model folder or a .gguf file")


def _load_hf_folder(folder: Path, check=None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise ValueError(f"{folder}: model_type {cfg.get('model_type')!r}; supported: llama")
    gen = folder / "generation_config.json"
    if gen.exists() and "eos_token_id" in (gen_cfg := json.loads(gen.read_text())):
        cfg = {**cfg, "eos_token_id": gen_cfg["eos_token_id"]}
    if check is not None:
        check(ModelConfig.from_hf(cfg))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors files")
    tensors = {}
    for file in files:
        for name, tensor in load_file(file).items():
            tensors[name.removeprefix("model.")] = tensor.float()
    return ModelConfig.from_hf(cfg), tensors


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_model_config(reader) -> ModelConfig:
    """The ModelConfig from a GGUFReader's llama.* and tokenizer.* metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} unsupported; supported: llama")
    hidden = _field(reader, "llama.embedding_length")
    heads = _field(reader, "llama.attention.head_count")
    scaling = {}
    if _field(reader, "llama.rope.scaling.type") not in (None, "none"):
        raise ValueError("GGUF rope scaling other than Llama-3 frequency factors is unsupported")
    tok_count = len(reader.fields["tokenizer.ggml.tokens"].data)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        vocab_size=_field(reader, "llama.vocab_size", tok_count),
        hidden_size=hidden,
        intermediate_size=_field(reader, "llama.feed_forward_length"),
        num_layers=_field(reader, "llama.block_count"),
        num_heads=heads,
        num_kv_heads=_field(reader, "llama.attention.head_count_kv", heads),
        head_dim=_field(reader, "llama.attention.key_length", 0),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rope_scaling=tuple(sorted(scaling.items())),
        tie_word_embeddings=not has_output,
        max_position_embeddings=_field(reader, "llama.context_length", 2048),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (eos,),
    )


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's converter interleaves each head's rotary halves; undo it for rotate_half RoPE.
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_blocks(data: np.ndarray, kind: str, shape: tuple[int, int]) -> QuantizedWeight:
    """A ggml Q8_0/Q4_0/Q4_1 matrix (raw bytes [N, row bytes]) as codes, scales and offsets.

    Layouts (ggml-common.h, blocks of 32 along K): Q8_0 = d:f16, qs:int8[32], x = d*q;
    Q4_0 = d:f16, qs:u8[16], x = d*(q - 8); Q4_1 = d:f16, m:f16, qs:u8[16], x = d*q + m; a 4-bit
    block stores element j in the low nibble of qs[j] and element j + 16 in its high nibble.
    """
    n, k = shape
    blocks = np.ascontiguousarray(data).reshape(n, k // GROUP, -1)
    d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        codes = blocks[..., 2:].copy().view(np.int8).reshape(n, k)
        return QuantizedWeight("int8", torch.from_numpy(codes), torch.from_numpy(d), None, GROUP)
    head = 2 if kind == "Q4_0" else 4
    qs = blocks[..., head:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, k)
    if kind == "Q4_0":
        offset = -8 * d
    else:
        offset = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    return QuantizedWeight(
        "int4", torch.from_numpy(codes), torch.from_numpy(d), torch.from_numpy(offset), GROUP
    )


def _load_gguf(path: Path, keep_quantized: bool = False, check=None) -> tuple[ModelConfig, dict]:
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    config = gguf_model_config(reader)
    if check is not None:
        check(config)
    tensors = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in _GGUF_TYPES:
            raise ValueError(f"{path}: tensor {t.name} is {kind}; supported: {_GGUF_TYPES}")
        if keep_quantized and kind in ("Q8_0", "Q4_0", "Q4_1"):
            shape = (int(t.shape[1]), int(t.shape[0]))  # ggml lists dims innermost first
            array = gguf_blocks(t.data, kind, shape)
        else:
            array = dequantize(t.data, t.tensor_type)
        match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name)
        if match:
            layer, part = match.groups()
            heads = {"attn_q": config.num_heads, "attn_k": config.num_kv_heads}.get(part)
            if heads is not None and isinstance(array, QuantizedWeight):
                array = array.rows(lambda rows, h=heads: _unpermute(rows, h))
            elif heads is not None:
                array = _unpermute(array, heads)
            name = f"layers.{layer}.{_GGUF_LAYER_NAMES[part]}.weight"
        elif t.name in _GGUF_TOP_NAMES:
            name = _GGUF_TOP_NAMES[t.name]
        else:
            raise ValueError(f"{path}: unexpected tensor {t.name}")
        if not isinstance(array, QuantizedWeight):
            array = torch.from_numpy(np.array(array, dtype=np.float32))  # writable copy
        tensors[name] = array
    return config, tensors
