"""Client processes beside the benchmark's own, for a server target: one Python process (one
event loop, one GIL) tops out near a few thousand requests/s and gets a smaller CPU share than
several on a busy machine; perf_analyzer is multi-threaded C++. Each helper process rebuilds the
target from its URL, runs its share of the clients over the same window (perf_counter is
CLOCK_MONOTONIC on Linux, shared by processes) and sends its samples back.
"""

from __future__ import annotations

import asyncio
import multiprocessing

from engine.bench.remote import BenchError
from engine.bench.targets import Inputs, Sample


def _child(conn, spec: str, model: str, api_key: str | None, requests: list[Inputs],
           concurrency: int, start_at: float, stop_at: float) -> None:  # fmt: skip
    from engine.bench.clients import clients
    from engine.bench.target_url import make_target

    async def go() -> list[Sample]:
        target = make_target(spec, model, api_key, None)
        await target.open()
        samples: list[Sample] = []
        try:
            await clients(target, requests, concurrency, start_at, stop_at, samples)
        finally:
            await target.close()
        return samples

    try:
        samples = asyncio.run(go())
        conn.send([(s.start, s.end, s.error, s.deltas, s.tokens) for s in samples])
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


class ClientProcesses:
    """`count` helper processes for `spec` (a grpc:// or http:// URL) and `model`."""

    def __init__(self, count: int, spec: str, model: str, api_key: str | None):
        self.count, self.spec, self.model, self.api_key = count, spec, model, api_key
        self._running: list = []

    def start(self, requests: list[Inputs], shares: list[int], start_at: float, stop_at: float):
        """Start one process per non-zero share of the clients."""
        context = multiprocessing.get_context("spawn")  # no fork of a loop, threads or channels
        for share in shares:
            if share <= 0:
                continue
            parent, child = context.Pipe(duplex=False)
            args = (child, self.spec, self.model, self.api_key, requests, share, start_at, stop_at)
            process = context.Process(target=_child, args=args, daemon=True)
            process.start()
            child.close()
            self._running.append((process, parent))

    def collect(self, timeout_s: float) -> list[Sample]:
        """Every helper's samples; BenchError if one failed or did not answer."""
        samples: list[Sample] = []
        running, self._running = self._running, []
        try:
            for process, conn in running:
                if not conn.poll(timeout_s):
                    raise BenchError(f"a client process sent nothing within {timeout_s:g} s")
                got = conn.recv()
                if isinstance(got, str):  # its error, as text
                    raise BenchError(f"a client process failed: {got}")
                samples += [Sample(s, e, err, list(d), t) for s, e, err, d, t in got]
        finally:
            for process, conn in running:
                conn.close()
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
        return samples
