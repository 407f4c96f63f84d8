"""The closed loop: `concurrency` clients each send their next request as soon as the previous
one ends, for a warm-up and then `duration_s` measured seconds (perf_analyzer's concurrency mode,
`vllm bench serve --max-concurrency`). The requests that end inside the measured window count
(for the rate and the latencies), wherever they began. A level's summary:

    {"concurrency", "duration_s", "requests" (ended in the window), "errors", "error_examples",
     "rps", "latency_ms": {"mean", "p50", "p90", "p99"},
     streamed outputs only: "ttft_ms", "itl_ms" (same keys), "tokens_per_s",
     "nodes": {node: {"items", "batches", "mean_batch", "queue_ms" (mean per item),
                      "compute_ms" (mean per batch), "failures"}}}   # server side, in the window

`search_p99` finds the highest concurrency whose p99 latency meets a target, without errors.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

from engine.bench.clients import clients
from engine.bench.procs import ClientProcesses
from engine.bench.targets import Inputs, NodeCounters, Sample, Target
from engine.samples import percentiles


async def run_level(
    target: Target,
    requests: list[Inputs],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    progress: bool = True,
    helpers: ClientProcesses | None = None,
) -> dict:
    """Drive `target` with `concurrency` clients over `requests` (round robin); summarise.
    With `helpers`, the clients are shared among this process and the helper processes (they
    start during the warm-up, so give it the ~1-2 s a process takes to start)."""
    from tqdm import tqdm

    samples: list[Sample] = []
    now = time.perf_counter()
    start_at, stop_at = now + warmup_s, now + warmup_s + duration_s
    counters: list[dict[str, NodeCounters]] = []
    procs = 1 + min(helpers.count, concurrency - 1) if helpers is not None else 1
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    if helpers is not None and procs > 1:
        helpers.start(requests, shares[1:], start_at, stop_at)

    async def clock() -> None:
        bar = tqdm(total=round(duration_s), unit="s", desc=f"concurrency {concurrency}",
                   leave=False, disable=not progress)  # fmt: skip
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        counters.append(await target.counters())
        shown = 0
        while (left := stop_at - time.perf_counter()) > 0:
            await asyncio.sleep(min(0.5, left))
            done = min(round(duration_s), round(time.perf_counter() - start_at))
            bar.update(done - shown)
            shown = done
            elapsed = max(time.perf_counter() - start_at, 1e-9)
            bar.set_postfix(rps=f"{sum(1 for s in samples if s.end) / elapsed:.1f}")
        counters.append(await target.counters())
        bar.close()

    await asyncio.gather(clock(), clients(target, requests, shares[0], start_at, stop_at, samples))
    if helpers is not None and procs > 1:
        samples += helpers.collect(timeout_s=60 + duration_s)
    return summarise(samples, concurrency, duration_s, stop_at, counters, target.streaming)


def summarise(
    samples: list[Sample],
    concurrency: int,
    duration_s: float,
    stop_at: float,
    counters: list[dict[str, NodeCounters]],
    streaming: bool,
) -> dict:
    """A level's summary (see the module docstring) from its samples and node counters."""
    ended = [s for s in samples if s.end <= stop_at]
    ok = [s for s in ended if not s.error]
    errors = [s.error for s in ended if s.error]
    out: dict = {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests": len(ended),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "rps": len(ok) / duration_s,
        "latency_ms": _stats([s.latency_s * 1e3 for s in ok]),
    }
    if streaming:
        out["ttft_ms"] = _stats([(s.deltas[0] - s.start) * 1e3 for s in ok if s.deltas])
        gaps = [(b - a) * 1e3 for s in ok for a, b in itertools.pairwise(s.deltas)]
        out["itl_ms"] = _stats(gaps)
        out["tokens_per_s"] = sum(s.tokens for s in ok) / duration_s
    out["nodes"] = _nodes(*counters) if len(counters) == 2 else {}
    return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    return {"mean": sum(values) / len(values), **percentiles(values)}


def _nodes(before: dict[str, NodeCounters], after: dict[str, NodeCounters]) -> dict:
    out = {}
    for name, a in after.items():
        b = before.get(name, NodeCounters())
        items, batches = a.success - b.success, a.batches - b.batches
        out[name] = {
            "items": items,
            "batches": batches,
            "mean_batch": items / batches if batches else None,
            "queue_ms": (a.queue_ns - b.queue_ns) / items / 1e6 if items else None,
            "compute_ms": (a.compute_ns - b.compute_ns) / batches / 1e6 if batches else None,
            "failures": a.failure - b.failure,
        }
    return out


def meets(level: dict, target_p99_ms: float) -> bool:
    p99 = level["latency_ms"]["p99"]
    return not level["errors"] and p99 is not None and p99 <= target_p99_ms


async def search_p99(
    measure: Callable[[int], Awaitable[dict]],
    target_p99_ms: float,
    levels: list[int],
    max_concurrency: int = 1024,
    max_steps: int = 4,
) -> tuple[int, dict[int, dict]]:
    """The highest concurrency whose p99 meets `target_p99_ms` (0: not even the lowest), and
    every level measured. Tries `levels` in order, doubles past the last if all meet, then
    bisects between the best that met and the first that did not (`max_steps` more levels)."""
    results: dict[int, dict] = {}

    async def at(n: int) -> bool:
        if n not in results:
            results[n] = await measure(n)
        return meets(results[n], target_p99_ms)

    good, bad = 0, None
    for n in sorted(set(levels)):
        if not await at(n):
            bad = n
            break
        good = n
    while bad is None and good and good * 2 <= max_concurrency:
        if await at(good * 2):
            good *= 2
        else:
            bad = good * 2
    steps = 0
    while bad is not None and bad - good > 1 and steps < max_steps:
        mid = (good + bad) // 2
        if mid < 1:
            break
        if await at(mid):
            good = mid
        else:
            bad = mid
        steps += 1
    return good, results
