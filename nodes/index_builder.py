"""Build a `faiss_search` index folder from a JSONL corpus, embedding it with the `encoder` kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nodes.encoder import EncoderNode, EncoderParams
from nodes.faiss_search import FaissSearchParams, save_index, train_index
from nodes.jsonl import read_objects

Progress = Callable[[int, int], None]  # (passages embedded so far, total)


def read_corpus(path: str | Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a JSONL corpus whose lines are {"id": ..., "text": ...}; blank lines skipped.
    A line without a text, or an id seen before, is a ValueError naming the line."""
    keys: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for number, row in read_objects(path):
        if not isinstance(row.get("text"), str):
            # a bad line in a data file: a value error for the user, not a programming error
            raise ValueError(f'{path}:{number}: expected {{"id": ..., "text": "..."}}')  # noqa: TRY004
        key = str(row.get("id", len(keys)))
        if key in seen:
            raise ValueError(f"{path}:{number}: duplicate id {key!r}")
        seen.add(key)
        keys.append(key)
        texts.append(row["text"])
    if not texts:
        raise ValueError(f"{path}: no passages")
    return keys, texts


def build_index(
    corpus_jsonl: str | Path,
    out_dir: str | Path,
    encoder_params: EncoderParams | dict[str, Any] | None = None,
    *,
    search_params: FaissSearchParams | dict[str, Any] | None = None,
    index_type: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    base_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed every passage of `corpus_jsonl`, build the faiss index and save it into `out_dir`.

    `encoder_params` are the encoder node's params (model paths resolve against `base_dir`);
    `search_params` the faiss_search node's (index type, metric, nlist, hnsw_m, ...), with
    `index_type` overriding theirs. Returns the metadata written to meta.json.
    """
    enc = EncoderParams.model_validate(encoder_params or {})
    if isinstance(search_params, FaissSearchParams):
        search = search_params.model_dump()
    else:
        search = dict(search_params or {})
    search.setdefault("index", str(out_dir))
    if index_type is not None:
        search["index_type"] = index_type
    params = FaissSearchParams.model_validate(search)

    keys, texts = read_corpus(corpus_jsonl)
    started = time.perf_counter()
    if progress is not None:
        progress(0, len(texts))
    encoder = EncoderNode(enc, base_dir)
    encoder.load(device)
    try:
        vectors = _embed(encoder, texts, batch_size, progress)
    finally:
        encoder.close()
    embed_s = time.perf_counter() - started
    index = train_index(vectors, params)
    meta = {
        "model": enc.model,
        "encoder": enc.model_dump(mode="json"),
        "dtype": encoder.dtype.dtype,
        "dtype_reason": encoder.dtype.reason,
        "index_type": params.index_type,
        "metric": params.metric,
        "corpus": str(corpus_jsonl),
        "embed_seconds": round(embed_s, 2),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    if params.index_type == "ivf":
        meta["nlist"] = int(index.nlist)
    if params.index_type == "hnsw":
        meta["hnsw_m"] = params.hnsw_m
    return save_index(out_dir, index, keys, texts, meta)


def _embed(encoder: EncoderNode, texts: list[str], batch_size: int, progress) -> np.ndarray:
    """[len(texts), dim] FP32 embeddings, computed in micro-batches of similar lengths."""
    vectors: np.ndarray | None = None
    # similar lengths side by side across the whole corpus: micro-batches pad far less
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        chunk = encoder.embed([texts[i] for i in rows])
        if vectors is None:
            vectors = np.empty((len(texts), chunk.shape[1]), dtype=np.float32)
        vectors[rows] = chunk
        if progress is not None:
            progress(start + len(rows), len(texts))
    assert vectors is not None  # read_corpus refuses an empty corpus
    return vectors
