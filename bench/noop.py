"""No-op pipeline: four chained `python` identity nodes run in-process; measures the engine alone.

    .venv/bin/python bench/noop.py [--seconds 3] [--rounds 3] [--concurrency 32] [--delay-ms 0]

Runs the same pipeline with dynamic batching (max_batch_size 32) and with max_batch_size 1 in
one process, alternating rounds, and prints markdown rows (the median round of each):
requests/s at the given concurrency, engine cost per node hop (1 / (requests/s x hops)), latency
percentiles, mean batch size, process CPU time per hop (all threads; steadier than wall time on
a shared machine) and the latency per hop of a lone request (concurrency 1). Target: >= 10,000 requests/s at 32.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.bench.load import run_level
from engine.bench.targets import InProcess
from engine.compiler import compile_file
from engine.executor import Executor
from engine.placement import GIB, Device

HOPS = 4
FUNCTION = "def identity(items):\n    return [{'y': item['x']} for item in items]\n"


def pipeline_text(max_batch_size: int, delay_ms: float) -> str:
    nodes = []
    for i in range(HOPS):
        source = "$inputs.x" if i == 0 else f"n{i - 1}.y"
        nodes.append(
            f"  n{i}:\n    kind: python\n"
            "    params: {function: noop_fns.py:identity, inputs: {x: {dtype: BYTES, shape: [1]}},"
            " outputs: {y: {dtype: BYTES, shape: [1]}}}\n"
            f"    inputs: {{x: {source}}}\n"
        )
    return (
        "apiVersion: pipectl/v1\nname: noop\n"
        "inputs: {x: {dtype: BYTES, shape: [1]}}\n"
        f"outputs: {{y: n{HOPS - 1}.y}}\n"
        f"defaults: {{batching: {{max_batch_size: {max_batch_size}, "
        f"max_queue_delay_ms: {delay_ms}}}}}\n"
        "nodes:\n" + "".join(nodes)
    )


def drive(executor: Executor, concurrency: int, seconds: float) -> dict:
    """Closed loop through `pipectl bench`'s driver: `concurrency` clients submit back to back
    for `seconds`; its level summary (rps, latency_ms, per-node items and batches)."""
    target = InProcess.of(executor)
    inputs = {"x": np.array([b"ping"], dtype=object)}
    return asyncio.run(run_level(target, [inputs], concurrency, seconds, 0.0, progress=False))


def start(folder: Path, max_batch_size: int, delay_ms: float) -> Executor:
    path = folder / f"noop_{max_batch_size}.yaml"
    path.write_text(pipeline_text(max_batch_size, delay_ms))
    executor = Executor(compile_file(path, devices=[Device("cpu", "cpu", 32 * GIB)]))
    executor.start()
    drive(executor, 8, 0.3)  # warm-up
    return executor


def measure(executor: Executor, concurrency: int, seconds: float) -> dict:
    """One closed-loop round: rate, wall and CPU cost per hop, latencies, mean batch size."""
    cpu = time.process_time()
    level = drive(executor, concurrency, seconds)
    cpu = time.process_time() - cpu
    nodes = level["nodes"].values()
    batches = sum(n["batches"] for n in nodes)
    rate = level["rps"]
    return {
        "rate": rate,
        "hop_us": 1e6 / (rate * HOPS),
        "cpu_hop_us": cpu * 1e6 / (level["requests"] * HOPS),
        "p50_ms": level["latency_ms"]["p50"],
        "p99_ms": level["latency_ms"]["p99"],
        "mean_batch": sum(n["items"] for n in nodes) / batches if batches else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per setting")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="max_queue_delay_ms")
    args = parser.parse_args()
    sizes = (32, 1)
    rounds: dict[int, list[dict]] = {size: [] for size in sizes}
    lone: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "noop_fns.py").write_text(FUNCTION)
        executors = {size: start(folder, size, args.delay_ms) for size in sizes}
        try:
            for _ in range(args.rounds):  # alternate, so that a noisy neighbour hits both
                for size in sizes:
                    rounds[size].append(measure(executors[size], args.concurrency, args.seconds))
            for size in sizes:
                lone[size] = drive(executors[size], 1, 1.0)["latency_ms"]["p50"] * 1e3 / HOPS
        finally:
            for executor in executors.values():
                executor.stop()
    print(
        f"\nno-op pipeline, {HOPS} python nodes, {args.concurrency} concurrent, in-process, "
        f"max_queue_delay_ms {args.delay_ms:g}, median of {args.rounds} alternating rounds of "
        f"{args.seconds:g} s, {time.strftime('%Y-%m-%d')}\n"
    )
    print(
        "| max_batch_size | requests/s (rounds) | µs per hop | p50 ms | p99 ms | mean batch "
        "| CPU µs per hop | lone request µs per hop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    medians = {}
    for size in sizes:
        runs = sorted(rounds[size], key=lambda r: r["rate"])
        r = medians[size] = runs[len(runs) // 2]
        each = ", ".join(f"{x['rate']:,.0f}" for x in rounds[size])
        print(
            f"| {size} | {r['rate']:,.0f} ({each}) | {r['hop_us']:.1f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['mean_batch']:.1f} | {r['cpu_hop_us']:.1f} "
            f"| {lone[size]:.0f} |"
        )
    ratio = medians[32]["rate"] / medians[1]["rate"]
    print(f"\nbatching / max_batch_size 1: {ratio:.1f}x requests/s (medians)")


if __name__ == "__main__":
    main()
