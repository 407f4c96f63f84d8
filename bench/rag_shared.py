"""pipelines/rag.yaml with its judge's and generator's SmolLM2 shared (one engine: the two nodes
agree on the engine config, see nodes/llm/shared.py) against the same pipeline with the
generator's engine config changed so that the model is loaded twice.

    .venv/bin/python bench/rag_shared.py                  # 8 questions, 4 clients, 48 tokens
    .venv/bin/python bench/rag_shared.py --questions 16 --clients 8

Each variant runs in its own process (the executor in-process, no server), one after the other:
RSS after loading, then `--questions` unseen questions from `--clients` concurrent callers;
requests/s and p50 latency. Needs the sample index (pipectl index build ... or `make run`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plan_for(variant: str, max_tokens: int):
    from engine.compiler import compile_file

    plan = compile_file(ROOT / "pipelines" / "rag.yaml")
    generate = plan.nodes["generate"]
    update = {"max_tokens": max_tokens}
    if variant == "twice":  # a different engine config: the generator gets its own SmolLM2
        update["max_num_seqs"] = generate.params.max_num_seqs * 2
    nodes = dict(
        plan.nodes, generate=replace(generate, params=generate.params.model_copy(update=update))
    )
    return replace(plan, nodes=nodes)


async def drive(executor, questions: list[str], clients: int) -> list[float]:
    import numpy as np

    queue = list(questions)
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            question = queue.pop()
            t0 = time.monotonic()
            await executor.submit({"query": np.array([question.encode()], dtype=object)})
            latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def child(variant: str, questions: int, clients: int, max_tokens: int) -> None:
    import numpy as np

    from bench.rag import question_pool
    from engine.executor import Executor
    from nodes.llm import shared

    before = rss_mib()
    executor = Executor(plan_for(variant, max_tokens))
    executor.start()
    loaded = rss_mib()
    pool = question_pool()
    offset = 40 if variant == "twice" else 40 + questions  # unseen questions for each
    asked = pool[offset : offset + questions]

    async def run() -> tuple[list[float], float]:
        t0 = time.monotonic()
        latencies = await drive(executor, asked, clients)
        return latencies, time.monotonic() - t0

    latencies, wall = asyncio.run(run())
    print(json.dumps({
        "variant": variant, "engines": shared.engines_loaded(),
        "rss_before_mib": round(before), "rss_loaded_mib": round(loaded),
        "rss_after_mib": round(rss_mib()), "requests": len(latencies), "clients": clients,
        "req_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(float(np.percentile(latencies, 50)), 2),
    }))  # fmt: skip
    executor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--variant", choices=("shared", "twice"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.variant, args.questions, args.clients, args.max_tokens)
        return
    rows = []
    for variant in ("shared", "twice"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--questions", str(args.questions),
             "--clients", str(args.clients), "--max-tokens", str(args.max_tokens)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    shared_row, twice_row = rows
    print(json.dumps({
        "rss_loaded_shared_over_twice": round(shared_row["rss_loaded_mib"] / twice_row["rss_loaded_mib"], 3),
        "req_per_s_shared_over_twice": round(shared_row["req_per_s"] / twice_row["req_per_s"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
