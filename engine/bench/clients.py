"""The closed-loop clients of one benchmark level: each sends its next request as soon as the
previous one ends (perf_analyzer's concurrency mode). Used by the benchmark's own process and by
its helper client processes alike."""

from __future__ import annotations

import asyncio
import itertools
import time

from engine.bench.targets import Inputs, Sample, Target


async def clients(
    target: Target,
    requests: list[Inputs],
    concurrency: int,
    start_at: float,
    stop_at: float,
    samples: list[Sample],
) -> None:
    """`concurrency` closed-loop clients until `stop_at` (perf_counter s); the samples that end
    after `start_at` go to `samples`."""
    order = itertools.count()

    async def client() -> None:
        while time.perf_counter() < stop_at:
            sample = await target.call(requests[next(order) % len(requests)])
            if sample.end >= start_at:  # ended in the window (or after it: dropped later)
                samples.append(sample)

    await asyncio.gather(*(client() for _ in range(concurrency)))
