"""The `rerank` kind: score every (query, passage) pair of a batch and keep each request's best
`top_n` passages.

Backends: `cross_encoder` (a Hugging Face sequence-classification folder, torch or onnxruntime;
nodes/rerank/cross_encoder.py) and `llm_judge` (log P(yes) - log P(no) of an LLM's next token after "does
the document answer the question?", prefill only, on the nodes/llm engine; nodes/rerank/llm_judge.py).

Ports: `query` BYTES [1], `docs` BYTES [-1], optional `ids` INT64 [-1], `keys` BYTES [-1] and
`prior` FP32 [-1] in (one per doc); `docs`, `scores`, `ids` and `keys` out, best first, at most
`top_n` long. `ids` out are the given ids of the kept passages, or their positions in the input
`docs` when none were given; `keys` likewise are the given keys, or the output ids as text.
`scores` are the model's relevance plus `prior_weight` × `prior` (e.g. the retrieval scores: a
weak judge then only reorders passages that retrieval ranked close together).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nodes.base import Item, Node, NodeParams, Ports, TensorSpec
from nodes.compute_dtype import DtypeChoice, DtypeName, resolve_dtype
from nodes.paths import resolve_path

# Of two wordings tried on 20 corpus questions, this one ranked better (fused with retrieval).
DEFAULT_JUDGE_PROMPT = (
    "Question: {query}\n\nDocument: {passage}\n\n"
    "Does the document answer the question? Answer Yes or No."
)


class RerankParams(NodeParams):
    """Reranker settings. `model`: a sequence-classification folder (cross_encoder) or the LLM's
    GGUF file or folder (llm_judge); `batch_size` counts (query, passage) pairs per forward pass."""

    backend: Literal["cross_encoder", "llm_judge"] = "cross_encoder"
    model: str
    top_n: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(512, ge=8, description="tokens per pair; longer passages are cut")
    dtype: DtypeName = Field(
        "auto",
        description="auto: the device's native dtype (fp32 here "
        "unless the CPU computes bf16); onnxruntime runs fp32",
    )
    runtime: Literal["torch", "onnxruntime"] = "torch"
    label: int | None = Field(None, description="cross_encoder: the relevant class (default last)")
    cache_dir: str | None = Field(None, description="onnxruntime: exports (~/.cache/pipectl/onnx)")
    prompt: str = Field(DEFAULT_JUDGE_PROMPT, description="llm_judge: the question, {query} first")
    chat: bool = Field(True, description="llm_judge: wrap the prompt in the model's chat template")
    kv_cache_mb: int = Field(256, ge=16, description="llm_judge: KV cache budget")
    quantization: Literal["auto", "none", "int8", "int4"] = Field(
        "auto", description="llm_judge: the llm node's `quantization` (auto keeps a GGUF quantized)"
    )
    prior_weight: float = Field(0.0, description="weight of the `prior` input in the score")

    @model_validator(mode="after")
    def _check(self) -> RerankParams:
        if self.runtime == "onnxruntime" and self.dtype not in ("fp32", "auto"):
            raise ValueError("runtime onnxruntime runs fp32 only; use dtype: fp32 or auto")
        if self.backend == "llm_judge" and self.runtime != "torch":
            raise ValueError("runtime onnxruntime is for the cross_encoder backend only")
        if self.backend == "llm_judge":
            q, p = self.prompt.find("{query}"), self.prompt.find("{passage}")
            if q < 0 or p < 0:
                raise ValueError("prompt must contain {query} and {passage}")
            if p < q:
                # the query must come first so the engine's prefix cache shares it
                raise ValueError("prompt must put {query} before {passage}")
        return self

    def compute_dtype(self, device: str) -> DtypeChoice:
        """The dtype an instance on `device` computes in (`auto` resolved)."""
        if self.runtime == "onnxruntime":
            return resolve_dtype(self.dtype, device, supported=("fp32",),
                                 why_limited="onnxruntime runs fp32")  # fmt: skip
        return resolve_dtype(self.dtype, device)


class RerankNode(Node):
    """Keeps the `top_n` most relevant passages of each request, scored by a cross-encoder or an
    LLM judge over all pairs of the whole batch."""

    deterministic = True  # no sampling: a response cache may serve it
    shareable = True  # pipelines with this node at equal params share its instances
    kind = "rerank"
    Params = RerankParams
    max_batch_size = 256

    @classmethod
    def ports(cls, params: RerankParams) -> Ports:
        return Ports(
            inputs={
                "query": TensorSpec("BYTES", (1,), doc="the question"),
                "docs": TensorSpec("BYTES", (-1,), doc="candidate passages"),
                "ids": TensorSpec("INT64", (-1,), optional=True, doc="ids of the passages"),
                "keys": TensorSpec("BYTES", (-1,), optional=True, doc="names of the passages"),
                "prior": TensorSpec("FP32", (-1,), optional=True, doc="e.g. retrieval scores"),
            },
            outputs={
                "docs": TensorSpec("BYTES", (-1,), doc=f"at most {params.top_n}, best first"),
                "scores": TensorSpec("FP32", (-1,), doc="relevance, higher is better"),
                "ids": TensorSpec("INT64", (-1,), doc="given ids, else positions in docs"),
                "keys": TensorSpec("BYTES", (-1,), doc="given keys, else the ids as text"),
            },
        )

    @classmethod
    def memory_bytes(cls, params: RerankParams) -> int:
        try:
            path = resolve_path(params.model)
        except FileNotFoundError:
            return 0
        files = (
            [path]
            if path.is_file()
            else list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
        )
        weights = sum(f.stat().st_size for f in files if f.exists())
        if params.backend == "llm_judge":
            # GGUF Q4 dequantizes to ~8x its size in fp32 (4x in bf16/fp16), plus the KV cache;
            # auto is sized as fp32, the largest it resolves to
            half = params.dtype in ("bf16", "fp16")
            return weights * (4 if half else 8) + params.kv_cache_mb * 2**20
        return weights // 2 if params.dtype in ("bf16", "fp16") else weights

    def load(self, device: str) -> None:
        self.device = device
        p: RerankParams = self.params  # type: ignore[assignment]
        self.dtype = p.compute_dtype(device)
        path = resolve_path(p.model, self.base_dir)
        if p.backend == "cross_encoder":
            from nodes.rerank.cross_encoder import CrossEncoderScorer

            self.scorer = CrossEncoderScorer(
                path,
                device=device,
                dtype=self.dtype.dtype,
                runtime=p.runtime,
                batch_size=p.batch_size,
                max_length=p.max_length,
                label=p.label,
                cache_dir=resolve_path(p.cache_dir, self.base_dir) if p.cache_dir else None,
            )
        else:
            from nodes.rerank.llm_judge import LLMJudgeScorer

            self.scorer = LLMJudgeScorer(
                path,
                device=device,
                dtype=self.dtype.dtype,
                prompt=p.prompt,
                chat=p.chat,
                batch_size=p.batch_size,
                max_length=p.max_length,
                kv_cache_mb=p.kv_cache_mb,
                quantization=p.quantization,
            )

    def run_batch(self, items: list[Item]) -> list[Item]:
        queries: list[str] = []
        passages: list[str] = []
        spans: list[tuple[np.ndarray, int, int]] = []
        for item in items:
            query = _text(item["query"].reshape(-1)[0]) if item["query"].size else ""
            docs = item["docs"].reshape(-1)
            rows = _scored_rows(item, docs.size)
            spans.append((rows, len(passages), len(passages) + rows.size))
            queries.extend([query] * rows.size)
            passages.extend(_text(docs[i]) for i in rows)
        scores = self.scorer.score(queries, passages) if passages else np.zeros(0, np.float32)
        return [
            self._top(item, rows, scores[a:b])
            for item, (rows, a, b) in zip(items, spans, strict=True)
        ]

    def _top(self, item: Item, rows: np.ndarray, scores: np.ndarray) -> Item:
        """The best `top_n` of the scored `rows` of the item's docs."""
        top_n: int = self.params.top_n  # type: ignore[attr-defined]
        weight: float = self.params.prior_weight  # type: ignore[attr-defined]
        prior = item.get("prior")
        if prior is not None and weight:
            scores = scores + weight * prior.reshape(-1)[rows].astype(np.float32)
        best = np.argsort(-scores, kind="stable")[:top_n]
        keep = rows[best]
        given_ids, given_keys = item.get("ids"), item.get("keys")
        ids = np.asarray(given_ids.reshape(-1)[keep] if given_ids is not None else keep, np.int64)
        if given_keys is not None:
            keys = [given_keys.reshape(-1)[i] for i in keep]
        else:
            keys = [str(i).encode() for i in ids]
        docs = item["docs"].reshape(-1)
        return {
            "docs": _objects([docs[i] for i in keep]),
            "scores": scores[best].astype(np.float32),
            "ids": ids,
            "keys": _objects(keys),
        }

    def close(self) -> None:
        scorer = getattr(self, "scorer", None)
        if scorer is not None and hasattr(scorer, "close"):
            scorer.close()
        self.scorer = None


def _scored_rows(item: Item, count: int) -> np.ndarray:
    """Positions of the docs to score: all, except padding that a search marks with id -1."""
    for name in ("ids", "keys", "prior"):
        given = item.get(name)
        if given is not None and given.size != count:
            raise ValueError(f"rerank: {given.size} {name} for {count} docs; give one per doc")
    ids = item.get("ids")
    rows = np.arange(count)
    return rows if ids is None else rows[ids.reshape(-1) >= 0]


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
