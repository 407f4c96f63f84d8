"""The encoder (torch and onnxruntime backends) and faiss_search nodes loaded on one device.

    python3 bench/nodes_device.py encoder|onnxruntime|faiss --device cuda:0 [--model DIR]
        [--count 100000] [--seconds 2] [--rows FILE]

Each node is built from its params and loaded with `load(device)`, as an instance placed on
that device is, then `run_batch` (what the batcher calls) is timed at batch 1 and 64 for about
`--seconds` each. The rows say what ran where: the torch module's device and dtype,
onnxruntime's providers in the session, and whether faiss put the index on the GPU (faiss-cpu
cannot: the node then searches on the CPU, and the row says so). Encoder texts are ~20-token
sentences from the sample corpus; faiss searches an IndexFlatIP of `--count` random unit
vectors of 384 dims, top 10. Markdown rows go to stdout and, with `--rows`, to FILE.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCHES = (1, 64)


def rate(run_batch, items: list[dict], batch: int, seconds: float) -> float:
    """Items/s of `run_batch` over batches of `batch` items, for about `seconds`."""
    run_batch(items[:batch])  # warm-up: this batch shape
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        lo = done % (len(items) - batch + 1)
        run_batch(items[lo : lo + batch])
        done += batch
    return done / elapsed


def encoder_rows(backend: str, args, tmp: str) -> list[str]:
    from bench.encoder import sentences
    from nodes.encoder import EncoderNode, EncoderParams

    params = EncoderParams(model=str(args.model), backend=backend, cache_dir=tmp)
    node = EncoderNode(params, None)
    node.load(args.device)
    if backend == "torch":
        where = f"torch on {node._model.device}, {node.dtype.dtype}"
    else:
        where = f"onnxruntime {', '.join(node._session.get_providers())}"
    items = [{"text": np.array([text], dtype=object)} for text in sentences(256)]
    rows = []
    for batch in BATCHES:
        per_s = rate(node.run_batch, items, batch, args.seconds)
        rows.append(f"| {backend} encoder | embeddings/s at batch {batch} | {per_s:,.0f} | "
                    f"{where} (asked: {args.device}) |")  # fmt: skip
    node.close()
    return rows


def faiss_rows(args, tmp: str) -> list[str]:
    import faiss

    from nodes.faiss_search import FaissSearchNode, FaissSearchParams, save_index, train_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.count, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = FaissSearchParams(index=tmp, top_k=10)
    names = [str(i) for i in range(args.count)]
    save_index(tmp, train_index(vectors, params), names, names,
               {"index_type": "flat", "metric": "ip"})  # fmt: skip
    node = FaissSearchNode(params, None)
    node.load(args.device)
    on_gpu = "Gpu" in type(node._index).__name__
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    where = (f"{type(node._index).__name__} on the GPU" if on_gpu else
             f"{type(node._index).__name__} on the CPU (faiss {faiss.__version__} sees {gpus} GPUs)")  # fmt: skip
    items = [{"vector": row} for row in vectors[:1024]]
    rows = []
    for batch in BATCHES:
        per_s = rate(node.run_batch, items, batch, args.seconds)
        rows.append(f"| faiss_search | queries/s at batch {batch}, {args.count:,} x 384 flat | "
                    f"{per_s:,.0f} | {where} (asked: {args.device}) |")  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("node", choices=("encoder", "onnxruntime", "faiss"))
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--model", type=Path, help="encoder model folder (default: the shipped one)")
    ap.add_argument("--count", type=int, default=100_000, help="faiss: vectors in the index")
    ap.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    ap.add_argument("--rows", type=Path, help="append the markdown rows to this file")
    args = ap.parse_args()
    from bench.llm_device import emit

    if args.model is None:
        from nodes.encoder import DEFAULT_MODEL
        from nodes.paths import resolve_path

        args.model = resolve_path(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        if args.node == "faiss":
            rows = faiss_rows(args, tmp)
        else:
            rows = encoder_rows("torch" if args.node == "encoder" else "onnxruntime", args, tmp)
    emit(rows, args.rows)


if __name__ == "__main__":
    main()
