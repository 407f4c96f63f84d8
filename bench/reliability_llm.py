"""The LLM parts of bench/reliability.py: streamed chats cancelled at random points, and unary
chats whose clients leave at a random time. Afterwards the engine must hold no KV blocks and
run nothing, and the next request must be served."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


async def _settled(server, row, part: str) -> None:
    """Wait (bounded) until the engine runs nothing and holds no KV blocks; report it."""
    start = time.monotonic()
    while time.monotonic() - start < 60:
        running = server.gauge("pipectl_llm_running")
        blocks = server.gauge("pipectl_llm_kv_blocks_used")
        if running == 0 and blocks == 0:
            break
        await asyncio.sleep(0.1)
    row(part, "KV blocks in use / running after (s to settle)",
        f"{blocks:g} / {running:g} ({time.monotonic() - start:.1f})")  # fmt: skip
    async with aiohttp.ClientSession() as session:
        body = {"model": "chat", "messages": STORY, "max_tokens": 4}
        async with session.post(f"{server.http}/v1/chat/completions", json=body) as r:
            row(part, "next request served", r.status == 200)


async def cancel_storm(server, count: int, row, concurrency: int = 32) -> None:
    """`count` streamed chats, each closed after a random number (0-12) of chunks."""
    rng = random.Random(1)
    gate = asyncio.Semaphore(concurrency)
    seen = {"cancelled": 0, "finished first": 0, "error": 0}
    url = f"{server.http}/v1/chat/completions"

    async def one(session) -> None:
        after = rng.randint(0, 12)
        body = {"model": "chat", "messages": STORY, "max_tokens": 64, "stream": True}
        async with gate:
            try:
                async with session.post(url, json=body) as r:
                    chunks = 0
                    async for line in r.content:
                        chunks += line.startswith(b"data:")
                        if chunks >= after:
                            r.close()  # the client leaves mid-stream
                            seen["cancelled"] += 1
                            return
                    seen["finished first"] += 1
            except (TimeoutError, aiohttp.ClientError):
                seen["error"] += 1

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(count)))
    row("cancel storm", f"{count} streams, {concurrency} at a time ({time.monotonic() - start:.0f} s)",
        seen)  # fmt: skip
    await _settled(server, row, "cancel storm")


async def unary_leavers(server, count: int, row, concurrency: int = 16) -> None:
    """`count` unary chats (max_tokens 64) whose clients leave after 0.05-1.5 s."""
    rng = random.Random(2)
    gate = asyncio.Semaphore(concurrency)
    seen = {"left": 0, "answered first": 0, "error": 0}
    url = f"{server.http}/v1/chat/completions"

    async def one(session) -> None:
        patience = aiohttp.ClientTimeout(total=rng.uniform(0.05, 1.5))
        body = {"model": "chat", "messages": STORY, "max_tokens": 64}
        async with gate:
            try:
                async with session.post(url, json=body, timeout=patience) as r:
                    await r.read()
                    seen["answered first" if r.status == 200 else "error"] += 1
            except TimeoutError:
                seen["left"] += 1
            except aiohttp.ClientError:
                seen["error"] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(count)))
    row("unary leavers", f"{count} chats, clients leave at 0.05-1.5 s", seen)
    await _settled(server, row, "unary leavers")
