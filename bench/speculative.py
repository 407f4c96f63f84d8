"""Prompt-lookup speculative decoding on the answers of pipelines/rag.yaml: tokens/s with it off
and on, at 1 and 8 concurrent requests, side by side in one process, and its acceptance rate.

    .venv/bin/python bench/speculative.py [--questions 8] [--single 4] [--max-tokens 128]
        [--k 4] [--lookup-max 4] [--lookup-min 2] [--rounds 2]

The chats come from rag.yaml itself: its nodes up to `prompt` (route, encode, search, the LLM
rerank, the template) run in an executor on questions of bench/rag.py, and their output is
what `generate` would receive. Then two engines with generate's params (model, dtype auto,
max_tokens, greedy) answer them, one without and one with `speculative`, in turn: each chat
alone (1 concurrent), and all `--questions` at once (8 concurrent), for `--rounds` alternating
rounds. Greedy answers must be token-identical; the script says so. The CPU is shared: compare
the two columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rag import QUESTIONS


def rag_chats(count: int) -> list[str]:
    """The chat JSON that rag.yaml's `prompt` node makes for the first `count` questions."""
    from engine.compiler import compile_spec
    from engine.executor import Executor
    from engine.spec import load_spec
    from nodes.dtypes import as_bytes_array

    spec = load_spec(ROOT / "pipelines" / "rag.yaml")
    spec.outputs = {"chat": "prompt.text"}
    del spec.nodes["generate"]
    executor = Executor(compile_spec(spec))
    executor.start()
    try:

        async def ask(question: str) -> str:
            result = await executor.submit({"query": as_bytes_array([question])})
            return result.outputs["chat"].reshape(-1)[0].decode()

        async def ask_all() -> list[str]:
            return await asyncio.gather(*(ask(q) for q in QUESTIONS[:count]))

        return asyncio.run_coroutine_threadsafe(ask_all(), executor.loop()).result(timeout=1800)
    finally:
        executor.stop(drain=False)


def engines(args):
    """(off, on): LLM engines with rag.yaml's generate params, without and with speculation."""
    import yaml

    from nodes.llm.engine import LLMEngine
    from nodes.llm.node import LLMParams
    from nodes.paths import resolve_path

    raw = yaml.safe_load((ROOT / "pipelines" / "rag.yaml").read_text())["nodes"]["generate"]
    params = LLMParams(**(raw["params"] | {"max_tokens": args.max_tokens}))
    spec = {"method": "ngram", "num_speculative_tokens": args.k,
            "prompt_lookup_max": args.lookup_max, "prompt_lookup_min": args.lookup_min}  # fmt: skip
    path = resolve_path(params.model, ROOT / "pipelines")
    off = LLMEngine(path, params.engine_config("cpu"))
    on_params = LLMParams(**(params.model_dump() | {"speculative": spec}))
    on = LLMEngine(path, on_params.engine_config("cpu"))
    return params, off, on


def timed(engine, prompts, sampling) -> tuple[float, float, int, list[list[int]], int, int]:
    """(wall s, CPU s, tokens, token ids, proposals checked, accepted) of one generate call.
    CPU time counts this process only: steadier than wall time on a shared machine."""
    before = engine.statistics()
    start, cpu = time.perf_counter(), time.process_time()
    out = engine.generate(prompts, sampling)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = engine.statistics()
    drafts = after["spec_draft_tokens"] - before["spec_draft_tokens"]
    accepted = after["spec_accepted_tokens"] - before["spec_accepted_tokens"]
    tokens = sum(c.completion_tokens for c in out)
    return seconds, cpu, tokens, [c.token_ids for c in out], drafts, accepted


def measure(off, on, groups, sampling, rounds):
    """Per engine [wall s, CPU s, tokens] summed over rounds and groups; drafts/accepted of
    `on`; whether the answers were identical."""
    totals = {"off": [0.0, 0.0, 0], "on": [0.0, 0.0, 0]}
    drafts = accepted = 0
    identical = True
    for r in range(rounds):
        for group in groups:
            order = (("off", off), ("on", on)) if r % 2 == 0 else (("on", on), ("off", off))
            ids = {}
            for name, engine in order:
                seconds, cpu, tokens, ids[name], d, a = timed(engine, group, sampling)
                for i, value in enumerate((seconds, cpu, tokens)):
                    totals[name][i] += value
                if name == "on":
                    drafts, accepted = drafts + d, accepted + a
            identical &= ids["on"] == ids["off"]
    return totals, drafts, accepted, identical


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=8, help="chats, all at once (concurrency)")
    ap.add_argument("--single", type=int, default=4, help="chats answered one at a time")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    ap.add_argument("--lookup-max", type=int, default=4)
    ap.add_argument("--lookup-min", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chats", help="a JSON file keeping the chats between runs (made if absent)")
    args = ap.parse_args()
    start = time.perf_counter()
    cache = Path(args.chats) if args.chats else None
    if cache is not None and cache.exists():
        chats = json.loads(cache.read_text())[: args.questions]
    else:
        chats = rag_chats(args.questions)
        if cache is not None:
            cache.write_text(json.dumps(chats))
    print(f"{len(chats)} rag.yaml chats in {time.perf_counter() - start:.0f} s", flush=True)
    params, off, on = engines(args)
    print(f"dtype: {off.dtype.reason}", flush=True)
    sampling = params.sampling()
    prompts = [off.tokenizer.apply_chat(json.loads(c)) for c in chats]
    rows = []
    for level, groups in ((1, [[p] for p in prompts[: args.single]]), (len(prompts), [prompts])):
        totals, drafts, accepted, same = measure(off, on, groups, sampling, args.rounds)
        rate = {name: tokens / wall for name, (wall, _, tokens) in totals.items()}
        cpu_ms = {name: cpu / tokens * 1e3 for name, (_, cpu, tokens) in totals.items()}
        rows.append((level, rate, cpu_ms, accepted / max(1, drafts), drafts, same))
        print(f"concurrent {level}: {totals}, acceptance {accepted}/{drafts}, identical {same}",
              flush=True)  # fmt: skip
    off.shutdown()
    on.shutdown()
    spec = f"k={args.k}, lookup {args.lookup_min}-{args.lookup_max}"
    print(f"\n| concurrent | tok/s off / on ({spec}) | speed-up | CPU ms/token off / on | "
          "CPU speed-up | acceptance | identical |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for level, rate, cpu, acc, drafts, same in rows:
        print(f"| {level} | {rate['off']:.1f} / {rate['on']:.1f} | {rate['on'] / rate['off']:.2f}× "
              f"| {cpu['off']:.0f} / {cpu['on']:.0f} | {cpu['off'] / cpu['on']:.2f}× "
              f"| {acc:.0%} of {drafts} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
