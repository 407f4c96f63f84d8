"""Turns a scheduled batch into flat model inputs (tokens, positions, slots, attention metadata) and
runs the model, returning logits only for the sequences that sample this step."""

from __future__ import annotations

import torch

from nodes.errors import InvalidConfig
from nodes.llm.attention import AttentionMetadata, new_kv_cache, triton_available
from nodes.llm.config import EngineConfig, ModelConfig, derive_max_model_len
from nodes.llm.cpu_attention import load_kernel
from nodes.llm.layer_ops import FusedOps
from nodes.llm.model import DTYPES, LlamaModel
from nodes.llm.sequence import Sequence


class ModelRunner:
    """Owns the model and its KV caches."""

    def __init__(self, model_config: ModelConfig, weights: dict, config: EngineConfig):
        self.config = config
        self.block_size = config.block_size
        self.device = torch.device(config.device)
        max_len = derive_max_model_len(config.max_model_len, model_config)
        self.max_model_len = max_len
        self.model = LlamaModel(
            model_config, weights, config.dtype, config.device, max_len, config.quantization
        )
        dtype, kv, hd = DTYPES[config.dtype], model_config.num_kv_heads, model_config.head_dim
        block_bytes = 2 * model_config.num_layers * self.block_size * kv * hd * dtype.itemsize
        self.num_blocks = config.kv_cache_bytes // block_bytes  # K and V of every layer
        if self.num_blocks < 1:
            raise InvalidConfig(
                f"kv_cache_bytes={config.kv_cache_bytes} holds no block of KV "
                f"({block_bytes} bytes each)",
                field="kv_cache_bytes",
            )
        shape = (self.num_blocks, self.block_size, kv, hd, dtype, self.device)
        self.kv_caches = [
            (new_kv_cache(*shape), new_kv_cache(*shape)) for _ in range(model_config.num_layers)
        ]
        self.use_triton = triton_available(config.device)
        self.cpu_kernel = self._cpu_kernel(config.attention_backend, hd)
        if self.cpu_kernel is not None and dtype == torch.float32:
            cfg = model_config
            self.model.ops = FusedOps(self.cpu_kernel.lib, self.model.cos, self.model.sin,
                                      cfg.rms_norm_eps)  # fmt: skip

    def _cpu_kernel(self, backend: str, head_dim: int):
        """The C decode kernel where it applies (CPU, a C compiler, fp32/bf16 cache), else None."""
        if backend == "torch" or self.device.type != "cpu":
            if backend == "cpu_kernel":
                raise InvalidConfig(
                    f"attention_backend cpu_kernel runs on a CPU, not {self.device}",
                    field="attention_backend",
                )
            return None
        kernel = load_kernel(head_dim)
        if kernel is None or not kernel.supports(self.kv_caches[0][0]):
            if backend == "cpu_kernel":
                raise InvalidConfig(
                    "attention_backend cpu_kernel: the C kernel could not be built "
                    "(no C compiler) or does not take this cache dtype (fp32, bf16)",
                    field="attention_backend",
                )
            return None
        return kernel

    def run(self, batch: list[tuple[Sequence, int]]) -> tuple[torch.Tensor, list[Sequence]]:
        """Compute the batch; logits [S, vocab] for the sequences whose chunk reaches their end."""
        input_ids, positions, meta, logits_at, samplers = self.prepare(batch)
        logits = self.model.forward(input_ids, positions, meta, self.kv_caches, logits_at)
        return logits.cpu(), samplers

    def prepare(self, batch: list[tuple[Sequence, int]]):
        """Flat model inputs: (input_ids, positions, metadata, logits_indices, samplers)."""
        bs = self.block_size
        # decodes first (stable); a speculative check is decode rows too, one per position
        batch = sorted(batch, key=lambda item: item[1] > 1 and not item[0].num_draft)
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_at: list[int] = []
        samplers: list[Sequence] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        prefills = []
        for seq, n in batch:
            start, table = seq.num_computed_tokens, seq.block_table
            first = len(input_ids)
            input_ids += seq.token_ids[start : start + n]
            pos = range(start, start + n)
            positions += pos
            slots += [table[p // bs] * bs + p % bs for p in pos]
            if (n == 1 or seq.num_draft) and not prefills:
                decode_tables += [table] * n  # each position sees the cache up to itself
                decode_lens += range(start + 1, start + n + 1)
            else:
                blocks = torch.tensor(table[: -(-(start + n) // bs)], device=self.device)
                prefills.append((first, n, start + n, blocks))
            if start + n == len(seq):  # and at each speculative proposal's position before it
                logits_at += range(len(input_ids) - 1 - seq.num_draft, len(input_ids))
                samplers.append(seq)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=self.device),
            num_decodes=len(decode_tables),
            prefills=tuple(prefills),
            cpu_kernel=self.cpu_kernel,
        )
        if decode_tables:
            width = max(len(t) for t in decode_tables)
            flat = [b for t in decode_tables for b in t + [0] * (width - len(t))]
            meta.decode_blocks = torch.tensor(flat, device=self.device)
        if decode_tables and self.cpu_kernel is not None:
            meta.decode_lens = torch.tensor(decode_lens)
        elif decode_tables:
            lens = torch.tensor(decode_lens).unsqueeze(1)
            masked = torch.arange(width * bs).unsqueeze(0) >= lens
            bias = torch.zeros(masked.shape).masked_fill_(masked, float("-inf"))
            meta.decode_bias = bias.view(len(decode_tables), 1, 1, -1).to(self.device)
        if self.use_triton:
            self._add_kernel_inputs(meta, batch)
        return (
            torch.tensor(input_ids, device=self.device),
            torch.tensor(positions, device=self.device),
            meta,
            torch.tensor(logits_at, dtype=torch.long, device=self.device),
            samplers,
        )

    def _add_kernel_inputs(self, meta: AttentionMetadata, batch) -> None:
        width = max(len(seq.block_table) for seq, _ in batch)
        tables, rows, positions = [], [], []
        for row, (seq, n) in enumerate(batch):
            tables.append(seq.block_table + [0] * (width - len(seq.block_table)))
            rows += [row] * n
            positions += range(seq.num_computed_tokens, seq.num_computed_tokens + n)
        meta.block_tables = torch.tensor(tables, dtype=torch.int32, device=self.device)
        meta.token_rows = torch.tensor(rows, dtype=torch.int32, device=self.device)
        meta.token_positions = torch.tensor(positions, dtype=torch.int32, device=self.device)
