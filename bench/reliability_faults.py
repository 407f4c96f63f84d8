"""Fault injection for bench/reliability.py. Four clients send good requests (x >= 0) to one
fault pipeline (bench/pipelines/fault_*.yaml); after 2 s one bad request (x < 0) makes its node
raise, call sys.exit, hang 10 s past the request's 2 s deadline, or kill its instance's thread.
Reported: good requests affected (failed, or not answered within 5 s), the time from the fault
until good requests are answered again, and what the bad request's client saw."""

from __future__ import annotations

import asyncio
import time

import aiohttp

FAULTS = ("raises", "exits", "hangs", "kills")
RUN_S, INJECT_AT_S, PATIENCE_S = 14.0, 2.0, 5.0


def _body(x: float, timeout_us: int = 0) -> dict:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}
    if timeout_us:
        body["parameters"] = {"timeout": timeout_us}
    return body


async def _call(session, url: str, body: dict, patience_s: float) -> tuple[bool, str]:
    try:
        timeout = aiohttp.ClientTimeout(total=patience_s)
        async with session.post(url, json=body, timeout=timeout) as r:
            text = await r.text()
            return r.status == 200, f"{r.status} {text[:90]}"
    except TimeoutError:
        return False, f"no answer within {patience_s:g} s"
    except aiohttp.ClientError as exc:
        return False, f"{type(exc).__name__}"


async def inject(server, fault: str, row) -> None:
    url = f"{server.http}/v2/models/fault_{fault}/infer"
    good: list[tuple[float, float, bool]] = []  # (sent, answered, ok) in s since start
    start = time.monotonic()
    saw: list[str] = []

    async def client(session) -> None:
        while (sent := time.monotonic() - start) < RUN_S:
            ok, _ = await _call(session, url, _body(1.0), PATIENCE_S)
            good.append((sent, time.monotonic() - start, ok))

    async def bad(session) -> None:
        await asyncio.sleep(INJECT_AT_S)
        _, seen = await _call(session, url, _body(-1.0, 2_000_000), 15)
        saw.append(seen)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(bad(session), *(client(session) for _ in range(4)))
    hurt = [g for g in good if not g[2] or g[1] - g[0] > PATIENCE_S]
    after = [g for g in good if g[0] >= INJECT_AT_S]
    last_hurt = max((g[1] for g in hurt), default=None)
    if last_hurt is None:
        recover = "0 (none affected)"
    elif any(g[2] and g[0] >= last_hurt for g in after):
        recover = f"{last_hurt - INJECT_AT_S:.1f} s"
    else:
        recover = "never (within the run)"
    row(f"fault {fault}", "good requests affected / sent", f"{len(hurt)} / {len(good)}")
    row(f"fault {fault}", "time to recover", recover)
    row(f"fault {fault}", "the bad request's client saw", saw[0] if saw else "?")
