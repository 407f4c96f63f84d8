"""Encoder pipeline: dynamic batching (max_batch_size 64) versus max_batch_size 1, same run.

    .venv/bin/python bench/encoder.py [--dtype bf16] [--backend torch] [--threads N] [--seconds 4]

One pipeline (query BYTES [1] → encoder → embedding) is compiled twice, once per batch size, and
both are loaded in this process. Closed-loop clients (1, 16 and 64 in flight) submit short
sentences from the sample corpus (~20 tokens) through engine.executor.Executor; rounds alternate
between the two settings so that a noisy neighbour hits both. Prints markdown rows: embeddings/s
(median round), p50 latency, mean batch size, process CPU ms per embedding, and the ratio.
Target: batching >= 5x max_batch_size 1 at 64 concurrent. Run it with GOMP_SPINCOUNT=10000 to
wait as `pipectl` processes do (nodes/openmp.py); libgomp's default spin costs more CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.bench.load import run_level
from engine.bench.targets import InProcess
from engine.compiler import compile_file
from engine.executor import Executor
from engine.placement import GIB, Device

SIZES = (64, 1)
WORDS = 14  # ~20 tokens, as in PERF-NOTES


def sentences(count: int = 512) -> list[bytes]:
    """Short sentences: the first words of the sample corpus' passages."""
    with (ROOT / "samples" / "corpus.jsonl").open() as fh:
        rows = [json.loads(line)["text"] for _, line in zip(range(count), fh, strict=False)]
    return [" ".join(text.split()[:WORDS]).encode() for text in rows]


def pipeline_text(max_batch_size: int, dtype: str, backend: str, threads: int | None) -> str:
    extra = f", threads: {threads}" if threads else ""
    return (
        "apiVersion: pipectl/v1\nname: encode\n"
        "inputs: {query: {dtype: BYTES, shape: [1]}}\n"
        "outputs: {embedding: encode.embedding}\n"
        "nodes:\n  encode:\n    kind: encoder\n"
        f"    params: {{dtype: {dtype}, backend: {backend}{extra}}}\n"
        "    inputs: {text: $inputs.query}\n"
        f"    batching: {{max_batch_size: {max_batch_size}, max_queue_delay_ms: 2}}\n"
    )


def drive(executor: Executor, texts: list[bytes], concurrency: int, seconds: float) -> dict:
    """`concurrency` clients submit back to back for `seconds` (`pipectl bench`'s closed loop,
    texts round robin); its level summary."""
    requests = [{"query": np.array([text], dtype=object)} for text in texts]
    target = InProcess.of(executor)
    return asyncio.run(run_level(target, requests, concurrency, seconds, 0.0, progress=False))


def measure(executor: Executor, texts: list[bytes], concurrency: int, seconds: float) -> dict:
    cpu = time.process_time()
    level = drive(executor, texts, concurrency, seconds)
    cpu = time.process_time() - cpu
    node = level["nodes"]["encode"]
    return {
        "rate": level["rps"],
        "p50_ms": level["latency_ms"]["p50"],
        "mean_batch": node["mean_batch"] or 0.0,
        "cpu_ms": cpu * 1e3 / max(1, level["requests"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--threads", type=int, help="the encoder's intra-op threads")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    texts = sentences()
    results: dict[tuple[int, int], list[dict]] = {(s, c): [] for s in SIZES for c in levels}
    with tempfile.TemporaryDirectory() as tmp:
        executors = {}
        for size in SIZES:
            path = Path(tmp) / f"encode_{size}.yaml"
            path.write_text(pipeline_text(size, args.dtype, args.backend, args.threads))
            plan = compile_file(path, devices=[Device("cpu", "cpu", 32 * GIB)])
            executors[size] = Executor(plan)
            executors[size].start()
            drive(executors[size], texts, 64, 1.0)  # warm-up: every batch shape
        try:
            for _ in range(args.rounds):
                for concurrency in levels:
                    for size in SIZES:
                        row = measure(executors[size], texts, concurrency, args.seconds)
                        results[(size, concurrency)].append(row)
        finally:
            for executor in executors.values():
                executor.stop()
    print(
        f"\nencoder pipeline (all-MiniLM-L6-v2, {args.backend} {args.dtype}, threads "
        f"{args.threads or 'default'}, ~20-token "
        f"sentences), in-process Executor, median of {args.rounds} alternating rounds of "
        f"{args.seconds:g} s, {os.cpu_count()} CPUs, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')} GOMP_SPINCOUNT "
        f"{os.environ.get('GOMP_SPINCOUNT', 'unset')}, load average {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print(
        "| concurrent | max_batch_size | embeddings/s (rounds) | p50 ms | mean batch | CPU ms/emb |"
    )
    print("|---|---|---|---|---|---|")
    ratios = []
    for concurrency in levels:
        medians = {}
        for size in SIZES:
            runs = sorted(results[(size, concurrency)], key=lambda r: r["rate"])
            r = medians[size] = runs[len(runs) // 2]
            each = ", ".join(f"{x['rate']:,.0f}" for x in results[(size, concurrency)])
            print(
                f"| {concurrency} | {size} | {r['rate']:,.0f} ({each}) | {r['p50_ms']:.1f} "
                f"| {r['mean_batch']:.1f} | {r['cpu_ms']:.2f} |"
            )
        ratios.append((concurrency, medians[64]["rate"] / medians[1]["rate"]))
    print()
    for concurrency, ratio in ratios:
        print(f"batching / max_batch_size 1 at {concurrency} concurrent: {ratio:.1f}x embeddings/s")


if __name__ == "__main__":
    main()
