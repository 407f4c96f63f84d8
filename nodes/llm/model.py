"""The Llama family in plain torch over flat token batches: RMSNorm, RoPE (with Llama-3 scaling),
grouped-query attention through the paged KV cache, SwiGLU, tied or untied embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nodes.llm.attention import AttentionMetadata, attend
from nodes.llm.config import ModelConfig

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

    def __init__(self, config: ModelConfig, weights: dict, dtype: str, device: str, max_len: int):
        self.config = config
        self.dtype = DTYPES[dtype]
        self.device = torch.device(device)

        def w(name):
            return weights[name].to(device=self.device, dtype=self.dtype).contiguous()

        self.embed = w("embed_tokens.weight")
        self.norm = w("norm.weight")
        lm_head = "embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
        self.lm_head = self.embed if config.tie_word_embeddings else w(lm_head)
        self.layers = []
        for i in range(config.num_layers):
            p = f"layers.{i}."
            qkv = torch.cat([weights[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
            gate_up = torch.cat(
                [weights[p + "mlp.gate_proj.weight"], weights[p + "mlp.up_proj.weight"]]
            )
            self.layers.append(
                (
                    w(p + "input_layernorm.weight"),
                    qkv.to(self.device, self.dtype).contiguous(),
                    w(p + "self_attn.o_proj.weight"),
                    w(p + "post_attention_layernorm.weight"),
                    gate_up.to(self.device, self.dtype).contiguous(),
                    w(p + "mlp.down_proj.weight"),
                )
            )
        inv_freq = rope_inv_freq(config, weights.get("rope_freqs"))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(self.device, self.dtype)
        self.sin = emb.sin().to(self.device, self.dtype)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        eps = self.config.rms_norm_eps
        return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)

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
        cfg = self.config
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        tokens = input_ids.shape[0]
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        half = head_dim // 2
        x = F.embedding(input_ids, self.embed)
        for (ln1, qkv_w, o_w, ln2, gate_up_w, down_w), (k_cache, v_cache) in zip(
            self.layers, kv_caches
        ):
            qkv = F.linear(self._rms_norm(x, ln1), qkv_w).view(
                tokens, heads + 2 * kv_heads, head_dim
            )
            qk = qkv[:, : heads + kv_heads]
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]
            x = x + F.linear(attend(q, k, v, k_cache, v_cache, meta), o_w)
            gate, up = F.linear(self._rms_norm(x, ln2), gate_up_w).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, down_w)
        x = self._rms_norm(x[logits_indices], self.norm)
        return F.linear(x, self.lm_head).float()
