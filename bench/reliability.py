"""Reliability figures of issue 8, against real `pipectl serve` processes on 127.0.0.1 with
aiohttp clients (KServe REST and the OpenAI routes), printed as one table.

    .venv/bin/python bench/reliability.py                     # every part, the issue's sizes
    .venv/bin/python bench/reliability.py --overload-s 20 --streams 300 --soak-s 120

- overload: the closed-loop capacity of pipelines/search.yaml (max_queue_size set), then an
  open loop at 4x that rate (or `--overload-rate`, to compare two builds at one rate): answered,
  rejected (429, median and p99 time to reject), lost (no answer), the server's CPU seconds.
- cancel storm: streamed chats cancelled after a random number of chunks, then unary chats whose
  clients leave at a random time; KV blocks in use afterwards, and whether the next is served.
- faults: a node that raises, calls sys.exit, hangs past the deadline, or whose instance thread
  is killed; good traffic around it: requests affected, time to recover, what the client saw.
- soak: mixed traffic (search, chat, streams, cancels, bad requests); lost, 5xx, RSS.
On a 2-core machine the Python clients share the cores with the server: rates are floors.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from live_server import ROOT, LiveServer
from reliability_faults import FAULTS, inject
from reliability_llm import cancel_storm, unary_leavers

HERE = Path(__file__).resolve().parent
CHAT = HERE / "pipelines" / "chat.yaml"
ROWS: list[tuple[str, str, str]] = []  # (part, figure, value)


def row(part: str, figure: str, value) -> None:
    ROWS.append((part, figure, str(value)))
    print(f"  {part:<14} {figure:<44} {value}", flush=True)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


def search_file(tmp: Path, max_queue_size: int) -> Path:
    """pipelines/search.yaml with max_queue_size on every node (the index path made absolute)."""
    spec = yaml.safe_load((ROOT / "pipelines" / "search.yaml").read_text())
    spec["defaults"]["batching"]["max_queue_size"] = max_queue_size
    spec["nodes"]["search"]["params"]["index"] = str(ROOT / "samples" / "index")
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def search_body(i: int) -> dict:
    query = f"how do I read a file line by line {i % 97}"
    return {"inputs": [{"name": "query", "shape": [1, 1], "datatype": "BYTES", "data": [query]}]}


async def _one(session, url: str, body: dict, timeout_s: float) -> tuple[str, float]:
    """(outcome, seconds): ok, rejected (429), error:<status>, or lost (no answer)."""
    start = time.monotonic()
    try:
        async with session.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as r:
            await r.read()
            kind = (
                "ok" if r.status == 200 else "rejected" if r.status == 429 else f"error:{r.status}"
            )
    except (TimeoutError, aiohttp.ClientError):
        kind = "lost"
    return kind, time.monotonic() - start


async def capacity(server: LiveServer, seconds: float, clients: int = 16) -> float:
    url = f"{server.http}/v2/models/search/infer"
    done = 0
    async with aiohttp.ClientSession() as session:
        end = time.monotonic() + seconds

        async def loop(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < end:
                kind, _ = await _one(session, url, search_body(i), 30)
                done += kind == "ok"
                i += clients

        start = time.monotonic()
        await asyncio.gather(*(loop(k) for k in range(clients)))
    return done / (time.monotonic() - start)


async def open_loop(
    server: LiveServer, rate: float, seconds: float, patience_s: float
) -> list[tuple[str, float]]:
    """Send at `rate` req/s for `seconds` whatever the answers; every outcome (lost: no answer
    within `patience_s`)."""
    url = f"{server.http}/v2/models/search/infer"
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.monotonic()
        i = 0
        while (now := time.monotonic() - start) < seconds:
            due = i / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(_one(session, url, search_body(i), patience_s)))
            i += 1
        sent_s = time.monotonic() - start
        results = await asyncio.gather(*tasks)
    row("overload", "sent (achieved rate, req/s)", f"{len(results)} ({len(results) / sent_s:.0f})")
    return results


def overload(args, tmp: Path) -> None:
    server = LiveServer.start([str(search_file(tmp, args.max_queue_size))], tmp / "search.log")
    try:
        cap = asyncio.run(capacity(server, args.capacity_s))
        row("overload", "capacity, 16 closed-loop clients (req/s)", f"{cap:.0f}")
        rate = args.overload_rate or 4 * cap
        cpu = server.cpu_s()
        results = asyncio.run(open_loop(server, rate, args.overload_s, args.patience_s))
        cpu = server.cpu_s() - cpu
        kinds = [k for k, _ in results]
        rejected = [s for k, s in results if k == "rejected"]
        what = "as set" if args.overload_rate else "4x capacity"
        row("overload", f"offered ({what}) for {args.overload_s:g} s", f"{rate:.0f} req/s")
        row("overload", "rejected: median ms to reject", f"{median(rejected) * 1e3:.1f}")
        row("overload", "answered", kinds.count("ok"))
        row("overload", "rejected 429 (p99 ms to reject)",
            f"{len(rejected)} ({p99(rejected) * 1e3:.1f})")  # fmt: skip
        other = sorted({k for k in kinds if k.startswith("error")})
        row("overload", "other errors", f"{sum(k.startswith('error') for k in kinds)} {other}")
        row("overload", f"lost (no answer within {args.patience_s:g} s)", kinds.count("lost"))
        answered = [t for k, t in results if k != "lost"]
        row("overload", "slowest answer (s)", f"{max(answered, default=0):.1f}")
        row("overload", "server CPU s (ms per request sent)",
            f"{cpu:.1f} ({cpu / max(1, len(results)) * 1e3:.2f})")  # fmt: skip
    finally:
        server.stop()


def llm_parts(args, tmp: Path) -> None:
    server = LiveServer.start([str(CHAT)], tmp / "chat.log")
    try:
        asyncio.run(cancel_storm(server, args.streams, row))
        asyncio.run(unary_leavers(server, args.leavers, row))
    finally:
        server.stop()


def faults(args, tmp: Path) -> None:
    files = [str(HERE / "pipelines" / f"fault_{name}.yaml") for name in FAULTS]
    server = LiveServer.start(files, tmp / "faults.log")
    try:
        for name in FAULTS:
            asyncio.run(inject(server, name, row))
        row("faults", "server ready afterwards", server.status("/v2/health/ready") == 200)
    finally:
        server.stop()


async def _soak(server: LiveServer, seconds: float, workers: int) -> None:
    counts: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    rng = random.Random(8)
    end = time.monotonic() + seconds
    start = time.monotonic()
    search = f"{server.http}/v2/models/search/infer"
    chat = f"{server.http}/v1/chat/completions"
    hi = [{"role": "user", "content": "Name a colour."}]
    bad = {"inputs": [{"name": "query", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}

    async def worker(session) -> None:
        while time.monotonic() < end:
            pick = rng.random()
            if pick < 0.45:
                kind, _ = await _one(session, search, search_body(rng.randrange(1000)), 60)
            elif pick < 0.65:
                kind, _ = await _one(
                    session, chat, {"model": "chat", "messages": hi, "max_tokens": 8}, 120
                )
            elif pick < 0.85:
                body = {"model": "chat", "messages": hi, "max_tokens": 16, "stream": True}
                kind = await _stream(
                    session, chat, body, rng.randint(0, 8) if pick < 0.75 else None
                )
            else:
                kind, _ = await _one(session, search, bad, 60)
                kind = "bad→400" if kind == "error:400" else f"bad→{kind}"
            counts[kind] = counts.get(kind, 0) + 1

    async def sampler() -> None:
        while time.monotonic() < end:
            rss.append((time.monotonic() - start, server.rss_mb()))
            await asyncio.sleep(2)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(sampler(), *(worker(session) for _ in range(workers)))
    early = next(m for t, m in rss if t >= 0.2 * seconds)
    row("soak", f"{seconds:g} s, {workers} clients: outcomes", dict(sorted(counts.items())))
    row("soak", "lost", counts.get("lost", 0))
    row("soak", "5xx", sum(v for k, v in counts.items() if ":5" in k))
    row("soak", "RSS MB at 20% of the run -> end",
        f"{early:.0f} -> {rss[-1][1]:.0f} ({(rss[-1][1] / early - 1) * 100:+.1f}%)")  # fmt: skip
    row("soak", "KV blocks in use after", server.gauge("pipectl_llm_kv_blocks_used"))


async def _stream(session, url: str, body: dict, cancel_after: int | None) -> str:
    """A streamed chat read to the end, or closed after `cancel_after` chunks."""
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=120)) as r:
            if r.status != 200:
                return f"error:{r.status}"
            chunks = 0
            async for line in r.content:
                if line.startswith(b"data:"):
                    chunks += 1
                    if cancel_after is not None and chunks >= cancel_after:
                        r.close()
                        return "stream cancelled"
            return "stream ok"
    except (TimeoutError, aiohttp.ClientError):
        return "lost"


def soak(args, tmp: Path) -> None:
    server = LiveServer.start([str(search_file(tmp, 256)), str(CHAT)], tmp / "soak.log")
    try:
        asyncio.run(_soak(server, args.soak_s, args.soak_clients))
    finally:
        server.stop()


PARTS = {"overload": overload, "llm": llm_parts, "faults": faults, "soak": soak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--max-queue-size", type=int, default=64)
    parser.add_argument("--capacity-s", type=float, default=10)
    parser.add_argument("--overload-s", type=float, default=60)
    parser.add_argument("--patience-s", type=float, default=120, help="overload client timeout")
    parser.add_argument("--overload-rate", type=float, default=0,
                        help="offered req/s (default: 4x the measured capacity); a fixed rate "
                        "compares two builds side by side")  # fmt: skip
    parser.add_argument("--streams", type=int, default=1000, help="streamed chats to cancel")
    parser.add_argument("--leavers", type=int, default=200, help="unary chats whose client leaves")
    parser.add_argument("--soak-s", type=float, default=600)
    parser.add_argument("--soak-clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            print(f"== {name}", flush=True)
            PARTS[name](args, Path(tmp))
    print("\n| part | figure | value |\n|---|---|---|")
    for part, figure, value in ROWS:
        print(f"| {part} | {figure} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
