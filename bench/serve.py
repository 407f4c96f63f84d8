"""Serving benchmark: pipelines over gRPC, against the same pipelines called in-process through
the executor, measured side by side in one run, both through `pipectl bench`'s targets and
closed-loop driver (engine/bench/).

    .venv/bin/python bench/serve.py                       # noop4 and embed, 1 and 32 clients
    .venv/bin/python bench/serve.py --pipelines noop4 --concurrency 1 32 --duration 10 --rounds 3

The server is `pipectl serve` in its own process; the clients are this process's asyncio gRPC
clients (`pipectl bench grpc://...`: one grpc.aio channel, KServe v2 ModelInfer), so the server's
figures are not flattered by sharing its interpreter with the load generator. A `ServerLive` row
(an empty RPC, same server, channel and driver) shows the ceiling that gRPC and a Python client
alone impose. On a 2-core machine clients and server compete for the same cores: read the figures
as a floor. CPU per request (server process, all threads; the client process) over the measured
window is steadier than req/s on a shared machine.
Reference (Triton 2.51 via PyTriton, identity model, dynamic batching, gRPC, this machine kind):
300 req/s with 1 client (p50 3.2 ms), 2,250 req/s with 32 clients (p50 13 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from engine.bench.load import run_level
from engine.bench.remote import Grpc
from engine.bench.targets import InProcess, Sample

PIPELINES = {"noop4": HERE / "pipelines" / "noop4.yaml", "embed": HERE / "pipelines" / "embed.yaml"}
TRITON = {1: 300.0, 32: 2250.0}
LIVE = "ServerLive"  # the floor: an empty RPC on the same server, same clients
SENTENCE = "How do I read a file line by line in Python without loading it all into memory?"


def request_inputs(pipeline: str) -> dict[str, np.ndarray]:
    """One request's inputs (batch dimension of 1)."""
    if pipeline == LIVE:
        return {}
    if pipeline == "noop4":
        return {"x": np.ones((1, 1), dtype=np.float32)}
    return {"text": np.array([[SENTENCE.encode()]], dtype=object)}


# ---- load through `pipectl bench`'s driver -----------------------------------------------------
def _window_cpu(target_cls):
    """`target_cls` that also notes CPU seconds (server process by PID, this process) at the
    two moments the driver reads counters: the start and the end of the measured window."""

    class Noted(target_cls):
        def note(self, server_pid: int | None) -> None:
            self.server_pid, self.cpu = server_pid, []

        async def counters(self):
            server = _cpu_s(self.server_pid) if self.server_pid else 0.0
            self.cpu.append((server, time.process_time()))
            return await super().counters()

    return Noted


class _Live(Grpc):
    """The floor: an empty ServerLive RPC on the same channel and driver."""

    async def open(self) -> None:
        from protos import grpc_service_pb2 as pb
        from protos import grpc_service_pb2_grpc as pb_grpc

        self.pb = pb
        self.metadata = ()
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.inputs, self.streaming, self.steps = {}, False, []

    async def call(self, inputs: dict) -> Sample:
        sample = Sample(time.perf_counter())
        await self.stub.ServerLive(self.pb.ServerLiveRequest())
        sample.end = time.perf_counter()
        return sample

    async def counters(self) -> dict:
        return {}


def _measure(target, server_pid, clients, warmup_s, duration_s, server_side: bool) -> dict:
    """One level: req/s and latency percentiles, CPU per request of the server (all its
    threads) and of this client process, over the measured window."""
    target.note(server_pid)
    item = {k: v[0] for k, v in request_inputs(target.name).items()}

    async def go() -> dict:
        await target.open()
        try:
            return await run_level(target, [item], clients, duration_s, warmup_s, progress=False)
        finally:
            await target.close()

    try:  # the same event loop as `pipectl serve` and `pipectl bench`
        import uvloop

        level = uvloop.run(go())
    except ImportError:
        level = asyncio.run(go())
    (server0, client0), (server1, client1) = target.cpu
    n = max(1, level["requests"])
    return {
        "requests": level["requests"],
        "rps": level["rps"],
        "p50_ms": level["latency_ms"]["p50"],
        "p99_ms": level["latency_ms"]["p99"],
        "server_us": ((server1 - server0) if server_side else (client1 - client0)) / n * 1e6,
        "client_us": (client1 - client0) / n * 1e6 if server_side else 0.0,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_grpc(url: str, server_pid: int, pipeline: str, clients: int, warmup_s: float,
              duration_s: float) -> dict:  # fmt: skip
    """`pipectl bench grpc://URL --model PIPELINE -c CLIENTS` (its Grpc target and driver)."""
    cls = _window_cpu(_Live if pipeline == LIVE else Grpc)
    target = cls(url, None if pipeline == LIVE else pipeline, None)
    target.name = pipeline
    return _measure(target, server_pid, clients, warmup_s, duration_s, server_side=True)


def in_process(pipeline: str, clients: int, warmup_s: float, duration_s: float) -> dict:
    """The same requests through Executor.submit on one event loop (no network, no protobuf):
    `pipectl bench bench/pipelines/PIPELINE.yaml`."""
    target = _window_cpu(InProcess)(str(PIPELINES[pipeline]))
    return _measure(target, None, clients, warmup_s, duration_s, server_side=False)


# ---- orchestration ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(pipelines: list[str]) -> tuple[subprocess.Popen, str]:
    import tritonclient.grpc as grpcclient

    port = _free_port()
    cmd = [sys.executable, "-m", "engine.cli", "serve", *(str(PIPELINES[p]) for p in pipelines),
           "--grpc-port", str(port), "--http-port", str(_free_port())]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    url = f"127.0.0.1:{port}"
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            ready = client.is_server_ready()
        except InferenceServerException:  # not listening yet
            ready = False
        if ready:
            return server, url
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("server not ready in 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pipelines", nargs="+", default=["noop4", "embed"], choices=tuple(PIPELINES)
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat each point; report the median"
    )
    args = parser.parse_args()

    runs: dict[tuple[str, int, str], list[dict]] = {}
    points = [(p, n) for p in args.pipelines for n in args.concurrency]
    server, url = start_server(args.pipelines)
    try:
        for _ in range(args.rounds):
            for pipeline, n in [*points, *((LIVE, n) for n in args.concurrency)]:
                r = over_grpc(url, server.pid, pipeline, n, args.warmup, args.duration)
                runs.setdefault((pipeline, n, "grpc"), []).append(r)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    for _ in range(args.rounds):  # alone on the machine, after the server has gone
        for pipeline, n in points:
            r = in_process(pipeline, n, args.warmup, args.duration)
            runs.setdefault((pipeline, n, "in-process"), []).append(r)
    # each point: the round with the median throughput (the machine may be shared)
    rows = [(*key, sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]) for key, rs in runs.items()]

    head = f"{'pipeline':9} {'clients':>7} {'path':11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"\n{head} {'server CPU us/req':>17} {'client CPU us/req':>17}  vs Triton")
    for pipeline, n, path, r in rows:
        ref = TRITON.get(n)
        ratio = f"{r['rps'] / ref:.2f}x" if ref and pipeline == "noop4" and path == "grpc" else ""
        row = f"{pipeline:9} {n:7} {path:11} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
        print(f"{row} {r['server_us']:17.0f} {r['client_us']:17.0f}  {ratio}")
    by = {(p, n, path): r for p, n, path, r in rows}
    print("\ncost of gRPC over an in-process call (p50 difference, throughput ratio):")
    for pipeline in args.pipelines:
        for n in args.concurrency:
            g, i = by[(pipeline, n, "grpc")], by[(pipeline, n, "in-process")]
            print(f"  {pipeline} @{n}: +{g['p50_ms'] - i['p50_ms']:.2f} ms p50, "
                  f"{g['rps'] / i['rps']:.2f}x the in-process req/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
