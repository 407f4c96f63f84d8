"""Two pipelines with the same encoder and search (two copies of pipelines/search.yaml) loaded in
one process, their nodes shared (engine/shared_runners.py: one set of instances, one queue per
node) against not shared (the second copy's batching differs by 0.5 ms of max_queue_delay_ms, so
each pipeline loads its own encoder and index, as before sharing existed), and shared with two instances per node
(shared2: as many instances as separate, in one queue).

    .venv/bin/python bench/shared_instances.py                     # 400 queries, 8 clients
    .venv/bin/python bench/shared_instances.py --queries 800 --clients 16

Each variant runs in its own process (executors in-process, no server), `--rounds` times each in
the order A B B A (medians reported):
RSS once both pipelines are loaded, instances loaded (engine.instance.instance_loads), then
`--queries` queries from `--clients` concurrent callers, alternating between the two pipelines;
requests/s and p50 latency. Needs the sample index (pipectl index build ... or `make run`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.rag_shared import rss_mib

VARIANTS = ("shared", "separate", "shared2")


def plans(variant: str, threads: int | None = None) -> list:
    """The two pipelines: identical nodes (shared; shared2: with two instances per node), or
    the second's batching changed (separate: one instance per node and pipeline)."""
    from engine.compiler import compile_file

    base = compile_file(ROOT / "pipelines" / "search.yaml")
    if threads:  # the encoder's intra-op threads (torch's default: one per core)
        encode = base.nodes["encode"]
        params = encode.params.model_copy(update={"threads": threads})
        base = replace(base, nodes={**base.nodes, "encode": replace(encode, params=params)})
    if variant == "shared2":
        nodes = {n: replace(node, instances=node.instances * 2) for n, node in base.nodes.items()}
        base = replace(base, nodes=nodes)
    second = replace(base, name="search_b")
    if variant == "separate":
        nodes = {
            name: replace(node, batching=replace(node.batching, max_queue_delay_ms=2.5))
            for name, node in base.nodes.items()
        }
        second = replace(second, nodes=nodes)
    return [replace(base, name="search_a"), second]


async def drive(executors: list, queries: list[str], clients: int) -> list[float]:
    import numpy as np

    queue = list(enumerate(queries))
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            index, text = queue.pop()
            t0 = time.monotonic()
            executor = executors[index % len(executors)]
            await executor.submit({"query": np.array([text.encode()], dtype=object)})
            latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def child(variant: str, queries: int, clients: int, threads: int | None) -> None:
    import numpy as np

    # two instances load in two threads at once, and transformers' lazy module is not safe to
    # first touch from two threads ("cannot import name 'AutoTokenizer'"): touch it here first
    from transformers import AutoModel, AutoTokenizer  # noqa: F401

    from bench.rag import question_pool
    from engine.executor import Executor
    from engine.instance import instance_loads

    before = rss_mib()
    executors = [Executor(plan) for plan in plans(variant, threads)]
    for executor in executors:
        executor.start()
    loaded = rss_mib()
    pool = question_pool()
    asked = [pool[i % len(pool)] + f" ({i})" for i in range(queries)]

    async def run() -> tuple[list[float], float]:
        await drive(executors, asked[: 2 * clients], clients)  # warm-up, not counted
        t0 = time.monotonic()
        latencies = await drive(executors, asked, clients)
        return latencies, time.monotonic() - t0

    latencies, wall = asyncio.run(run())
    print(json.dumps({
        "variant": variant, "instance_loads": instance_loads(),
        "rss_before_mib": round(before), "rss_loaded_mib": round(loaded),
        "rss_after_mib": round(rss_mib()), "requests": len(latencies), "clients": clients,
        "req_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
    }))  # fmt: skip
    for executor in executors:
        executor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant (medians)")
    parser.add_argument("--encoder-threads", type=int, help="the encoder's threads param")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.variant, args.queries, args.clients, args.encoder_threads)
        return
    rows: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    order = [*VARIANTS, *reversed(VARIANTS)] * ((args.rounds + 1) // 2)
    for variant in order[: len(VARIANTS) * args.rounds]:  # A B C C B A: drift in load cancels
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--queries", str(args.queries),
             "--clients", str(args.clients),
             *(["--encoder-threads", str(args.encoder_threads)] if args.encoder_threads else [])],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[variant][-1]), flush=True)

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[variant])

    for variant in ("shared", "shared2"):
        print(json.dumps({
            f"rss_loaded_{variant}_over_separate": round(median(variant, "rss_loaded_mib") / median("separate", "rss_loaded_mib"), 3),
            f"req_per_s_{variant}_over_separate": round(median(variant, "req_per_s") / median("separate", "req_per_s"), 3),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
