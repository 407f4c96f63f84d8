"""Live reload benchmark: a model repository served in explicit mode, reloaded under load.

    .venv/bin/python bench/reload.py                                  # embed, 32 clients
    .venv/bin/python bench/reload.py --clients 32 --reloads 5 --cycles 20

Phase 1: `--clients` tritonclient gRPC clients (threads of one process) send requests without
pause; after a steady window, the pipeline file is rewritten and `load_model` called `--reloads`
times. Each request is timed; latency percentiles are reported for requests that overlapped a
reload ("during switch") and for the rest ("steady"), with every failed request counted.
Phase 2: `--cycles` more reloads with light load; the server's RSS (/proc/PID/status VmRSS) after
each one shows whether memory stays flat (the old version's threads and weights are freed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SENTENCE = "How do I read a file line by line in Python without loading it all into memory?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def start(repo: Path, grpc_port: int, http_port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--model-repository", str(repo),
           "--model-control-mode", "explicit", "--load-model", "*",
           "--grpc-port", str(grpc_port), "--http-port", str(http_port)]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    import tritonclient.grpc as grpcclient

    deadline = time.monotonic() + timeout_s
    client = grpcclient.InferenceServerClient(url)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        with contextlib.suppress(Exception):  # not listening yet
            if client.is_server_ready():
                return
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


def rewrite(path: Path, i: int) -> None:
    """A real change (new file contents), as an edit would make: a comment with the cycle."""
    text = path.read_text().split("\n# reload")[0]
    path.write_text(f"{text}\n# reload {i}\n")


class Load:
    """Closed-loop clients; each request recorded as (start, end, ok)."""

    def __init__(self, url: str, model: str, clients: int):
        self.url, self.model, self.clients = url, model, clients
        self.records: list[tuple[float, float, bool]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        text = grpcclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[SENTENCE.encode()]], dtype=object))
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                client.infer(self.model, [text])
                ok = True
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                ok = False
                self.errors.append(str(exc)[:200])
            self.records.append((t0, time.monotonic(), ok))
        client.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"n": 0}
    ms = np.array(latencies) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=str(HERE / "pipelines" / "embed.yaml"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--steady", type=float, default=10.0, help="seconds before reloading")
    parser.add_argument("--reloads", type=int, default=5, help="reloads under full load")
    parser.add_argument("--cycles", type=int, default=20, help="reloads for the memory check")
    parser.add_argument("--cycle-clients", type=int, default=2, help="load during the cycles")
    parser.add_argument("--cycle-wait", type=float, default=3.0, help="seconds after a cycle")
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    tmp = Path(tempfile.mkdtemp(prefix="pipectl-reload-"))
    repo = tmp / "models"
    repo.mkdir()
    source = Path(args.pipeline)
    target = repo / source.name
    shutil.copy(source, target)
    model = next(line.split(":", 1)[1].strip() for line in source.read_text().splitlines()
                 if line.startswith("name:"))  # fmt: skip
    grpc_port, http_port = _free_port(), _free_port()
    process = start(repo, grpc_port, http_port, tmp / "serve.log")
    url = f"127.0.0.1:{grpc_port}"
    try:
        wait_ready(url, process)
        control = grpcclient.InferenceServerClient(url)
        switches: list[tuple[float, float]] = []
        with Load(url, model, args.clients) as load:  # phase 1
            time.sleep(args.steady)
            for i in range(args.reloads):
                rewrite(target, i)
                t0 = time.monotonic()
                control.load_model(model)
                switches.append((t0, time.monotonic()))
                time.sleep(args.steady / 2)
        during, steady = [], []
        for t0, t1, ok in load.records:
            if ok:
                overlap = any(t0 < b and t1 > a for a, b in switches)
                (during if overlap else steady).append(t1 - t0)
        failed = sum(1 for *_, ok in load.records if not ok)
        memory = [round(rss_mib(process.pid), 1)]
        thread_counts = [threads(process.pid)]
        with Load(url, model, args.cycle_clients):
            for i in range(args.cycles):
                rewrite(target, 1000 + i)
                control.load_model(model)
                time.sleep(args.cycle_wait)  # the old version drains and stops meanwhile
                memory.append(round(rss_mib(process.pid), 1))
                thread_counts.append(threads(process.pid))
        time.sleep(args.cycle_wait * 3)  # let the last retirements finish
        settled = round(rss_mib(process.pid), 1)
        log_text = (tmp / "serve.log").read_text(errors="replace")
        result = {
            "pipeline": source.name, "clients": args.clients, "reloads": args.reloads,
            "requests": len(load.records), "failed": failed, "errors": load.errors[:3],
            "reload_s": [round(b - a, 2) for a, b in switches],
            "steady": percentiles(steady), "during_switch": percentiles(during),
            "rss_mib_after_cycle": memory, "rss_mib_settled": settled,
            "versions_stopped": log_text.count(" stopped"), "threads": thread_counts,
        }  # fmt: skip
        print(json.dumps(result, indent=1))
        control.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
