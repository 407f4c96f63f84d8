"""One OpenAI-API load for any server: streamed completions at a few concurrencies, one JSON line
per run on stdout.

    python bench/peers/load.py --base-url http://127.0.0.1:8000/v1 --model llm \
        --concurrency 1 64 --max-tokens 128 --label pipectl

Workload (as in PERF-NOTES' vLLM comparison): prompts of ~105 tokens cut from one English text at
different offsets, greedy, `max_tokens` new tokens each with `ignore_eos` (sent as vLLM's extra
field; pipectl's bench pipeline sets it on the node). At concurrency C it sends C requests at once
(batch 1: `--batch1-requests` one after another). Figures: output tokens/s over the wall time of
the whole run (tokens from the final `usage` chunk, else one per streamed chunk), and time to
first token (first chunk with text), p50, in ms. Needs only the `openai` package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.prompts import TEXT


def prompts(count: int, words: int = 80) -> list[str]:
    """`count` distinct prompts of `words` words (~105 SmolLM2 tokens)."""
    pool = (TEXT * 4).split()
    return [" ".join(pool[(5 * i) % 150 : (5 * i) % 150 + words]) for i in range(count)]


async def one(client, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first text, completion tokens) of one streamed completion."""
    start = time.perf_counter()
    first, chunks, usage = None, 0, None
    stream = await client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].text:
            chunks += 1
            if first is None:
                first = time.perf_counter() - start
    return first if first is not None else float("nan"), usage or chunks


async def run(base_url: str, model: str, concurrency: int, requests: int, max_tokens: int):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="none", timeout=3600, max_retries=0)
    texts = prompts(requests)
    start = time.perf_counter()
    if concurrency == 1:
        results = [await one(client, model, t, max_tokens) for t in texts]
    else:
        results = await asyncio.gather(*(one(client, model, t, max_tokens) for t in texts))
    elapsed = time.perf_counter() - start
    await client.close()
    tokens = sum(n for _, n in results)
    return {
        "concurrency": concurrency, "requests": requests, "tokens": tokens,
        "tokens_per_s": tokens / elapsed, "ttft_p50_ms": statistics.median(t for t, _ in results) * 1e3,
        "elapsed_s": elapsed,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch1-requests", type=int, default=4)
    ap.add_argument("--warmup", action="store_true", help="one short request first, not reported")
    args = ap.parse_args()
    if args.warmup:
        asyncio.run(run(args.base_url, args.model, 1, 1, 4))
    for c in args.concurrency:
        n = args.batch1_requests if c == 1 else c
        row = asyncio.run(run(args.base_url, args.model, c, n, args.max_tokens))
        print(json.dumps({"label": args.label, **row}), flush=True)


if __name__ == "__main__":
    main()
