"""Flat search: faiss-cpu's default BLAS threshold, threshold 20, and faiss_search's per-batch choice.

    .venv/bin/python bench/search.py [--count 100000] [--batches 1,16,64] [--rounds 3] [--threads N]

An IndexFlatIP over `count` random unit vectors is searched (top 10) with batches of queries,
first through faiss directly with each threshold, then through a loaded FaissSearchNode's
run_batch (what the engine calls; BLAS from 4 queries, faiss' sequential kernel below). Rounds
alternate between the settings; prints markdown rows with queries/s (median round) and the
ratios node / default threshold and threshold 20 / default.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.faiss_search import FaissSearchNode, FaissSearchParams, save_index, train_index

TOP_K = 10


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rate(search, queries: np.ndarray, batch: int, seconds: float) -> float:
    """Queries/s of `search(batch_of_queries)` repeated for about `seconds`."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        lo = (done // batch * batch) % (len(queries) - batch + 1)
        search(queries[lo : lo + batch])
        done += batch
    return done / elapsed


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="faiss OpenMP threads (default: all cores)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    default_threshold = faiss.cvar.distance_compute_blas_threshold
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    vectors = unit_rows(args.count, args.dim, 0)
    queries = unit_rows(1024, args.dim, 1)
    with tempfile.TemporaryDirectory() as tmp:
        params = FaissSearchParams(index=tmp, top_k=TOP_K, threads=args.threads)
        index = train_index(vectors, params)
        names = [str(i) for i in range(args.count)]
        save_index(tmp, index, names, names, {"index_type": "flat", "metric": "ip"})
        node = FaissSearchNode(params, None)
        node.load("cpu")

    def direct(threshold: int):
        def search(x: np.ndarray):
            faiss.cvar.distance_compute_blas_threshold = threshold
            return index.search(x, TOP_K)

        return search

    def through_node(x: np.ndarray):
        return node.run_batch([{"vector": row} for row in x])

    settings = {
        f"faiss, default threshold ({default_threshold})": direct(default_threshold),
        "faiss, threshold 20": direct(20),
        f"FaissSearchNode.run_batch (BLAS from batch {params.blas_min_batch})": through_node,
    }
    results: dict[tuple[str, int], list[float]] = {(s, b): [] for s in settings for b in batches}
    for _ in range(args.rounds):
        for batch in batches:
            for name, search in settings.items():
                results[(name, batch)].append(rate(search, queries, batch, args.seconds))
    print(
        f"\nIndexFlatIP {args.count:,} x {args.dim}, top {TOP_K}, faiss {faiss.__version__}, "
        f"threads {args.threads or 'default'}, "
        f"median of {args.rounds} alternating rounds of {args.seconds:g} s, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')} GOMP_SPINCOUNT "
        f"{os.environ.get('GOMP_SPINCOUNT', 'unset')}, load average {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    head = " | ".join(f"{name} q/s" for name in settings)
    print(f"| batch | {head} | node / default | 20 / default |")
    print("|---" * (len(settings) + 3) + "|")
    for batch in batches:
        medians = [sorted(results[(name, batch)])[args.rounds // 2] for name in settings]
        cells = " | ".join(f"{m:,.0f}" for m in medians)
        print(
            f"| {batch} | {cells} | {medians[2] / medians[0]:.1f}x | {medians[1] / medians[0]:.1f}x |"
        )


if __name__ == "__main__":
    main()
