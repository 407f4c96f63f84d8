"""Paged attention over a KV cache indexed `[num_blocks, block_size, kv_heads, head_dim]`.

One interface, `attend(q, k, v, k_cache, v_cache, meta)`: it writes the batch's new K/V into the
cache at `meta.slot_mapping` and returns the attention output. On CPU, with `meta.cpu_kernel` (the
C kernel of nodes/llm/cpu_attention.py), decodes read their blocks in place up to their own
length; without it (the torch reference) they gather their blocks for the whole batch with
`index_select` and run a grouped matmul (query heads viewed per KV head, no repeat of K/V).
Prefill chunks run SDPA one sequence at a time. On CUDA with Triton a paged kernel reads the
blocks in place for every token.

`new_kv_cache` stores each KV head's blocks together (memory `[kv_heads, num_blocks, block_size,
head_dim]`, seen through a permuted view with the indexing above): a gather of a sequence's blocks
then comes out as `[kv_heads, tokens, head_dim]`, the layout the matmuls and SDPA read, with no
transposing copy (in a decode step those copies took ~11% of the time). Caches in the plain
contiguous layout work too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class AttentionMetadata:
    """Where each token of a flat batch goes; decodes (one token each) first, then prefill chunks.

    Prefill entries: (first token index, chunk length, context length after the chunk, blocks).
    """

    slot_mapping: torch.Tensor  # [T] int64: block * block_size + offset of each new token
    num_decodes: int = 0
    decode_blocks: torch.Tensor | None = None  # [num_decodes * max_blocks] int64, padded with 0
    decode_bias: torch.Tensor | None = None  # [num_decodes, 1, 1, max_blocks*block_size] 0 or -inf
    prefills: tuple[tuple[int, int, int, torch.Tensor], ...] = ()
    # CUDA kernel inputs: per token its sequence row and position, and all block tables
    token_rows: torch.Tensor | None = None
    token_positions: torch.Tensor | None = None
    block_tables: torch.Tensor | None = None
    decode_rows: torch.Tensor | None = None  # decode_blocks per KV head, set by the first layer
    # the C kernel (nodes/llm/cpu_attention.CpuAttention), with each decode row's context length
    cpu_kernel: object | None = None
    decode_lens: torch.Tensor | None = None  # [num_decodes] int64


def new_kv_cache(num_blocks, block_size, kv_heads, head_dim, dtype, device) -> torch.Tensor:
    """A zeroed cache indexed [num_blocks, block_size, KV, D], each head's blocks together."""
    # zeros, not garbage: masked padding still goes through a matmul, and NaN * 0 is NaN
    store = torch.zeros(kv_heads, num_blocks, block_size, head_dim, dtype=dtype, device=device)
    return store.permute(1, 2, 0, 3)


def _heads(cache: torch.Tensor) -> torch.Tensor | None:
    """The cache as [KV, num_blocks * block_size, D] if it is head-major, else None."""
    store = cache.permute(2, 0, 1, 3)
    return store.reshape(store.shape[0], -1, store.shape[3]) if store.is_contiguous() else None


def _store(cache: torch.Tensor, slots: torch.Tensor, new: torch.Tensor) -> None:
    heads = _heads(cache)
    if heads is not None:
        heads.index_copy_(1, slots, new.transpose(0, 1))
    else:
        cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, new)


def attend(q, k, v, k_cache, v_cache, meta: AttentionMetadata) -> torch.Tensor:
    """q [T, H, D], k/v [T, KV, D] → [T, H*D]; stores k/v in the caches first."""
    kernel = meta.cpu_kernel
    if kernel is not None:
        kernel.store(k, v, k_cache, v_cache, meta.slot_mapping)
    else:
        _store(k_cache, meta.slot_mapping, k)
        _store(v_cache, meta.slot_mapping, v)
    if meta.token_rows is not None:
        return _triton_attend(q, k_cache, v_cache, meta)
    nd = meta.num_decodes
    if nd and kernel is not None:
        blocks = meta.decode_blocks.view(nd, -1)
        decoded = kernel.decode(q[:nd], k_cache, v_cache, blocks, meta.decode_lens)
        if nd == q.shape[0]:
            return decoded
    elif nd:
        decoded = _decode(q[:nd], k_cache, v_cache, meta)
    out = q.new_empty(q.shape[0], q.shape[1] * q.shape[2])
    if nd:
        out[:nd] = decoded
    for start, n, ctx, blocks in meta.prefills:
        out[start : start + n] = _prefill(
            q[start : start + n], k, v, k_cache, v_cache, start, ctx, blocks
        )
    return out


def _gather(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The tokens of `blocks`, in order, as [KV, len(blocks) * block_size, D]."""
    num_blocks, _block_size, kv_heads, head_dim = cache.shape
    if _heads(cache) is not None:
        rows = (torch.arange(kv_heads, device=blocks.device) * num_blocks)[:, None] + blocks
        return _gather_rows(cache, rows.view(-1)).view(kv_heads, -1, head_dim)
    flat = torch.index_select(cache.view(num_blocks, -1), 0, blocks)
    return flat.view(-1, kv_heads, head_dim).transpose(0, 1)


def _gather_rows(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of a head-major cache seen as [KV * num_blocks, block_size * D]."""
    num_blocks, block_size, kv_heads, head_dim = cache.shape
    store = cache.permute(2, 0, 1, 3).reshape(kv_heads * num_blocks, block_size * head_dim)
    return torch.index_select(store, 0, rows)


def _decode(q, k_cache, v_cache, meta):
    n, heads, head_dim = q.shape
    num_blocks, _block_size, kv_heads, _ = k_cache.shape
    if _heads(k_cache) is not None:  # gathered straight into [KV, n, L, D]
        if meta.decode_rows is None:
            offsets = torch.arange(kv_heads, device=q.device) * num_blocks
            meta.decode_rows = (offsets[:, None] + meta.decode_blocks).view(-1)
        keys = _gather_rows(k_cache, meta.decode_rows).view(kv_heads, n, -1, head_dim)
        values = _gather_rows(v_cache, meta.decode_rows).view(kv_heads, n, -1, head_dim)
    else:  # [n, L, KV, D] made contiguous as [KV, n, L, D]
        shape = (n, -1, kv_heads, head_dim)
        keys = _gather(k_cache, meta.decode_blocks).transpose(0, 1).reshape(shape)
        keys = keys.permute(2, 0, 1, 3).contiguous()
        values = _gather(v_cache, meta.decode_blocks).transpose(0, 1).reshape(shape)
        values = values.permute(2, 0, 1, 3).contiguous()
    # grouped: query heads of one KV head together, no repeat of K/V; [KV, n, G, D]
    qg = q.view(n, kv_heads, heads // kv_heads, head_dim).transpose(0, 1)
    scores = torch.matmul(qg, keys.transpose(2, 3)).float()  # [KV, n, G, L]
    scores.mul_(head_dim**-0.5).add_(meta.decode_bias.view(n, 1, -1))
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    return torch.matmul(probs, values).transpose(0, 1).reshape(n, heads * head_dim)


def _prefill(q, k, v, k_cache, v_cache, start, ctx, blocks):
    n = q.shape[0]
    if ctx == n:  # no earlier context: the chunk's own K/V, causal
        keys, values = k[start : start + n].transpose(0, 1), v[start : start + n].transpose(0, 1)
        mask, causal = None, True
    else:
        keys, values = _gather(k_cache, blocks)[:, :ctx], _gather(v_cache, blocks)[:, :ctx]
        q_pos = torch.arange(ctx - n, ctx, device=q.device).unsqueeze(1)
        mask, causal = torch.arange(ctx, device=q.device).unsqueeze(0) <= q_pos, False
    # 4-D inputs take torch's CPU flash kernel; 3-D ones fall back to the slow math path
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], keys[None], values[None],
        attn_mask=mask, is_causal=causal, enable_gqa=True,
    )  # fmt: skip
    return out[0].transpose(0, 1).reshape(n, -1)


def triton_available(device: str) -> bool:
    """Whether the CUDA kernel can run: a cuda device and an importable triton."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_KERNEL = None


def _triton_attend(q, k_cache, v_cache, meta):
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build_kernel()
    tokens, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    out = torch.empty_like(q)
    _KERNEL[(tokens, kv_heads)](
        q, k_cache, v_cache, out, meta.block_tables, meta.token_rows, meta.token_positions,
        head_dim**-0.5, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), meta.block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=max(2, 1 << (group - 1).bit_length()), BLOCK=block_size, D=head_dim,
    )  # fmt: skip
    return out.view(tokens, heads * head_dim)


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def paged_attention(
        Q, K, V, O, BT, ROWS, POS, scale,
        sqt, sqh, skb, sks, skh, sbt, sot, soh,
        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        # One program per (token, KV head): its query heads attend keys 0..pos of its sequence,
        # read block by block through the block table, with an online softmax.
        t = tl.program_id(0)
        kvh = tl.program_id(1)
        row = tl.load(ROWS + t).to(tl.int64)
        pos = tl.load(POS + t)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, D)
        s = tl.arange(0, BLOCK)
        heads = kvh * GROUP + g
        gmask = g < GROUP
        q = tl.load(Q + t * sqt + heads[:, None] * sqh + d[None, :], mask=gmask[:, None], other=0.0)
        q = q.to(tl.float32) * scale
        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        den = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D], tl.float32)
        for i in range(pos // BLOCK + 1):
            blk = tl.load(BT + row * sbt + i).to(tl.int64)
            kmask = i * BLOCK + s <= pos
            off = blk * skb + s[:, None] * sks + kvh * skh + d[None, :]
            k = tl.load(K + off, mask=kmask[:, None], other=0.0).to(tl.float32)
            v = tl.load(V + off, mask=kmask[:, None], other=0.0).to(tl.float32)
            scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)
            scores = tl.where(kmask[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            den = den * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
            m = m_new
        out = acc / den[:, None]
        ptr = O + t * sot + heads[:, None] * soh + d[None, :]
        tl.store(ptr, out.to(O.dtype.element_ty), mask=gmask[:, None])

    return paged_attention
