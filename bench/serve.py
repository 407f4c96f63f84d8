"""Serving benchmark: pipelines over gRPC with stock tritonclient clients, against the same
pipelines called in-process through the executor, measured side by side in one run.

    .venv/bin/python bench/serve.py                       # noop4 and embed, 1 and 32 clients
    .venv/bin/python bench/serve.py --pipelines noop4 --concurrency 1 32 --duration 10 --rounds 3

The server is `pipectl serve` in its own process; clients run in separate processes
(--client-procs, threads inside each; one tritonclient client per thread), so the server's
figures are not flattered by sharing its interpreter with the load generator. A `ServerLive` row
(an empty RPC, same server and clients) shows the ceiling that gRPC and the Python clients alone
impose. On a 2-core machine clients and server compete for the same cores: read the figures as a
floor. CPU per request (server process, all threads; client processes) is steadier than req/s
on a shared machine.
Reference (Triton 2.51 via PyTriton, identity model, dynamic batching, gRPC, this machine kind):
300 req/s with 1 client (p50 3.2 ms), 2,250 req/s with 32 clients (p50 13 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
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


def summarise(latencies_s: list[float], elapsed_s: float) -> dict:
    lat = np.asarray(latencies_s) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / elapsed_s,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


# ---- client processes -------------------------------------------------------------------------
def client_main(url: str, pipeline: str, threads: int, warmup_s: float, duration_s: float) -> None:
    """Run `threads` tritonclient loops; print the measured latencies as JSON."""
    import tritonclient.grpc as grpcclient

    arrays = request_inputs(pipeline)
    start_at = time.monotonic() + warmup_s
    stop_at = start_at + duration_s
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    totals = [0] * threads
    cpu_start = time.process_time()

    def loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        inputs = []
        for name, array in arrays.items():
            dtype = "BYTES" if array.dtype == object else "FP32"
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        out = per_thread[index]
        while True:
            begin = time.monotonic()
            if begin >= stop_at:
                break
            if pipeline == LIVE:
                client.is_server_live()
            else:
                client.infer(pipeline, inputs)
            totals[index] += 1
            if begin >= start_at:
                out.append(time.monotonic() - begin)
        client.close()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    latencies = [x for lat in per_thread for x in lat]
    print(
        json.dumps(
            {"lat": latencies, "total": sum(totals), "cpu_s": time.process_time() - cpu_start}
        )
    )


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_grpc(
    url: str, server_pid: int, pipeline: str, clients: int, procs: int, warmup_s: float,
    duration_s: float,
) -> dict:  # fmt: skip
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    cmd = [sys.executable, __file__, "--client", url, pipeline]
    running = [
        subprocess.Popen([*cmd, str(n), str(warmup_s), str(duration_s)], stdout=subprocess.PIPE, cwd=ROOT)
        for n in shares
    ]  # fmt: skip
    server_cpu = _cpu_s(server_pid)
    latencies: list[float] = []
    total = 0
    client_cpu = 0.0
    for p in running:
        out, _ = p.communicate(timeout=warmup_s + duration_s + 120)
        if p.returncode:
            raise RuntimeError(f"client process failed ({p.returncode})")
        report = json.loads(out)
        latencies.extend(report["lat"])
        total += report["total"]
        client_cpu += report["cpu_s"]
    server_cpu = _cpu_s(server_pid) - server_cpu
    return summarise(latencies, duration_s) | {
        "server_us": server_cpu / total * 1e6,
        "client_us": client_cpu / total * 1e6,
    }


# ---- in process -------------------------------------------------------------------------------
def in_process(pipeline: str, clients: int, warmup_s: float, duration_s: float) -> dict:
    """The same requests through Executor.submit on one event loop (no network, no protobuf)."""
    from engine.compiler import compile_file
    from engine.executor import Executor

    executor = Executor(compile_file(PIPELINES[pipeline]))
    executor.start()
    item = {k: v[0] for k, v in request_inputs(pipeline).items()}

    total = [0]

    async def run() -> list[float]:
        start_at = time.monotonic() + warmup_s
        stop_at = start_at + duration_s
        latencies: list[float] = []

        async def loop() -> None:
            while True:
                begin = time.monotonic()
                if begin >= stop_at:
                    return
                await executor.submit(item)
                total[0] += 1
                if begin >= start_at:
                    latencies.append(time.monotonic() - begin)

        await asyncio.gather(*(loop() for _ in range(clients)))
        return latencies

    try:
        cpu = time.process_time()
        try:  # the same event loop as `pipectl serve`
            import uvloop

            latencies = uvloop.run(run())
        except ImportError:
            latencies = asyncio.run(run())
        cpu = time.process_time() - cpu
        return summarise(latencies, duration_s) | {
            "server_us": cpu / total[0] * 1e6,
            "client_us": 0.0,
        }
    finally:
        executor.stop()


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
    parser.add_argument("--client-procs", type=int, default=2, help="client processes at >1 client")
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
                r = over_grpc(url, server.pid, pipeline, n, args.client_procs, args.warmup, args.duration)  # fmt: skip
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
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _, _, url, pipeline, threads, warmup, duration = sys.argv
        client_main(url, pipeline, int(threads), float(warmup), float(duration))
    else:
        sys.exit(main())
