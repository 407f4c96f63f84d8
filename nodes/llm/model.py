"""The Llama family in plain torch over flat token batches: RMSNorm, RoPE (with Llama-3 scaling),
grouped-query attention through the paged KV cache, SwiGLU, tied or untied embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nodes.llm.attention import AttentionMetadata, attend
from nodes.llm.config import ModelConfig
from nodes.llm.layer_ops import TorchOps
from nodes.llm.quant import QuantizedWeight, as_float, cat_rows, make_linear, resolve

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def rope_inv_freq(config: ModelConfig, freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse RoPE frequencies, with Llama-3 scaling (config or GGUF `rope_freqs` factors)."""
    dim = config.head_dim
    inv_freq = 1.0 / (
        config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    )
    if freq_factors is not None:
        return inv_freq / freq_factors.float()
    scaling = dict(config.rope_scaling)
    if scaling.get("rope_type") != "llama3":
        return inv_freq
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class LlamaModel:
    """Weights and forward pass; `forward` computes logits only at `logits_indices`."""

    def __init__(
        self, config: ModelConfig, weights: dict, dtype: str, device: str, max_len: int,
        quantization: str = "auto",
    ):  # fmt: skip
        self.config = config
        self.dtype = DTYPES[dtype]
        self.device = torch.device(device)

        def w(name):
            return as_float(weights[name]).to(device=self.device, dtype=self.dtype).contiguous()

        weights = dict(weights)  # fused entries are added; the caller's dict stays as it was
        names = []
        for i in range(config.num_layers):
            p = f"layers.{i}."
            qkv = [weights.pop(p + f"self_attn.{x}_proj.weight") for x in "qkv"]
            weights[p + "qkv"] = cat_rows(qkv)
            gate_up = [weights.pop(p + f"mlp.{x}_proj.weight") for x in ("gate", "up")]
            weights[p + "gate_up"] = cat_rows(gate_up)
            names += [p + x for x in ("qkv", "self_attn.o_proj.weight", "gate_up")]
            names.append(p + "mlp.down_proj.weight")
        head = "embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
        linears = resolve(weights, names, head, quantization)
        embed = weights["embed_tokens.weight"]
        if isinstance(embed, QuantizedWeight) and self.device.type == "cpu":
            self.embed = embed  # rows dequantized per lookup
        else:
            self.embed = w("embed_tokens.weight")
        self.norm = w("norm.weight")

        def linear(name):
            return make_linear(linears.pop(name), self.dtype, self.device)

        self.lm_head = linear(head)
        self.layers = []
        for i in range(config.num_layers):
            p = f"layers.{i}."
            self.layers.append(
                (
                    w(p + "input_layernorm.weight"),
                    linear(p + "qkv"),
                    linear(p + "self_attn.o_proj.weight"),
                    w(p + "post_attention_layernorm.weight"),
                    linear(p + "gate_up"),
                    linear(p + "mlp.down_proj.weight"),
                )
            )
        inv_freq = rope_inv_freq(config, weights.get("rope_freqs"))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(self.device, self.dtype)
        self.sin = emb.sin().to(self.device, self.dtype)
        self.ops = TorchOps(self.cos, self.sin, config.rms_norm_eps)  # FusedOps: runner.py

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        logits_indices: torch.Tensor,
    ) -> torch.Tensor:
        """Flat tokens [T] at `positions` → float32 logits [len(logits_indices), vocab]."""
        cfg, ops = self.config, self.ops
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        tokens = input_ids.shape[0]
        if isinstance(self.embed, QuantizedWeight):
            x = self.embed.embedding(input_ids).to(self.dtype)
        else:
            x = F.embedding(input_ids, self.embed)
        delta = None  # the MLP output of the layer before, added to x by the next norm
        for (ln1, qkv_proj, o_proj, ln2, gate_up_proj, down_proj), (k_cache, v_cache) in zip(
            self.layers, kv_caches
        ):
            x, h = ops.add_rms_norm(x, delta, ln1)
            qkv = qkv_proj(h).view(tokens, heads + 2 * kv_heads, head_dim)
            qk = ops.rope(qkv, positions, heads + kv_heads)
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]
            x, h = ops.add_rms_norm(x, o_proj(attend(q, k, v, k_cache, v_cache, meta)), ln2)
            delta = down_proj(ops.silu_mul(gate_up_proj(h)))
        _, x = ops.add_rms_norm(x[logits_indices], delta[logits_indices], self.norm)
        return self.lm_head(x).float()
