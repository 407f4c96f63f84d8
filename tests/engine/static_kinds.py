"""Small, real node kinds for the engine's static tests (spec, graph, compiler, CLI).

Loaded with runpy (by conftest and by CLI subprocesses), which registers them under names that
start with `t_` so they never clash with the built-in kinds.
"""

from __future__ import annotations

import zlib

import numpy as np
from pydantic import Field

from nodes.base import Node, NodeParams, Ports, TensorSpec
from nodes.registry import register

MIB = 1 << 20


class TextParams(NodeParams):
    suffix: str = ""
    repeat: int = Field(1, ge=1, le=8)
    memory_mb: int = Field(0, ge=0)


@register
class TextNode(Node):
    """Appends `suffix` to its text `repeat` times; reports the length."""

    kind = "t_text"
    Params = TextParams
    max_batch_size = 64

    @classmethod
    def ports(cls, params: TextParams) -> Ports:
        return Ports(
            inputs={
                "text": TensorSpec("BYTES", (1,)),
                "prefix": TensorSpec("BYTES", (1,), optional=True, default=b""),
                "count": TensorSpec("INT64", (1,), optional=True, default=0),
            },
            outputs={"text": TensorSpec("BYTES", (1,)), "length": TensorSpec("INT64", (1,))},
        )

    @classmethod
    def memory_bytes(cls, params: TextParams) -> int:
        return params.memory_mb * MIB

    def run_batch(self, items):
        out = []
        for item in items:
            prefix = item.get("prefix", np.array([b""], dtype=object))[0]
            text = prefix + item["text"][0] + self.params.suffix.encode() * self.params.repeat
            out.append({"text": np.array([text], dtype=object), "length": np.array([len(text)])})
        return out


class EmbedParams(NodeParams):
    dim: int = Field(ge=1, le=4096)
    memory_mb: int = Field(100, ge=0)


@register
class EmbedNode(Node):
    """A deterministic pseudo-embedding of its text (crc32-seeded), `dim` wide."""

    kind = "t_embed"
    Params = EmbedParams
    max_batch_size = 16

    @classmethod
    def ports(cls, params: EmbedParams) -> Ports:
        return Ports(
            inputs={"text": TensorSpec("BYTES", (1,))},
            outputs={"vector": TensorSpec("FP32", (params.dim,))},
        )

    @classmethod
    def memory_bytes(cls, params: EmbedParams) -> int:
        return params.memory_mb * MIB

    def run_batch(self, items):
        out = []
        for item in items:
            rng = np.random.default_rng(zlib.crc32(item["text"][0]))
            out.append({"vector": rng.standard_normal(self.params.dim).astype(np.float32)})
        return out


class TopKParams(NodeParams):
    k: int = Field(4, ge=1)
    corpus: list[str] = Field(default_factory=lambda: ["alpha", "beta", "gamma", "delta"])


@register
class TopKNode(Node):
    """Scores its corpus against a vector and returns the best k ids, scores and texts."""

    kind = "t_topk"
    Params = TopKParams

    @classmethod
    def ports(cls, params: TopKParams) -> Ports:
        return Ports(
            inputs={"vector": TensorSpec("FP32", (-1,))},
            outputs={
                "ids": TensorSpec("INT64", (-1,)),
                "scores": TensorSpec("FP32", (-1,)),
                "texts": TensorSpec("BYTES", (-1,)),
                "count": TensorSpec("INT64", (1,)),
            },
        )

    def run_batch(self, items):
        out = []
        corpus = self.params.corpus
        for item in items:
            vec = item["vector"]
            scores = np.array([float(vec[i % len(vec)]) for i in range(len(corpus))], np.float32)
            ids = np.argsort(-scores)[: self.params.k]
            texts = np.array([corpus[i].encode() for i in ids], dtype=object)
            out.append(
                {"ids": ids, "scores": scores[ids], "texts": texts, "count": np.array([len(ids)])}
            )
        return out
