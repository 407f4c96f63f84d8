"""End-to-end RAG: pipelines/rag.yaml served by `pipectl serve` against the baseline a user would
write (bench/rag_baseline.py: one aiohttp handler calling encode, search, rerank and transformers
`generate` in order). Same models, index, questions and answer length.

Both servers are started first (each alone while it loads); then, for each number of concurrent
clients, pipectl and the baseline are driven in turn, never at the same time. Every client sends
`POST /v2/models/rag/generate_stream` and reads the server-sent events to the end.

    python bench/rag.py            # 1, 8, 32 clients
    python bench/rag.py --quick    # fewer requests, for a smoke run
    python bench/rag.py --no-rerank  # both systems without the rerank step (search keeps 4)

Prints requests/s, p50/p99 latency and p50 time to first token per system and level, and the
ratios pipectl / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How do I parse a JSON string into a Python object?",
    "How can I sort a list with a custom key?",
    "How do I get the current local date and time?",
    "How do I copy a whole directory tree?",
    "How do I run a shell command and capture its output?",
    "How do I create nested directories?",
    "How do I replace all matches of a regular expression in a string?",
    "How do I find all occurrences of a pattern in a string?",
    "How do I pause the program for a few seconds?",
    "How do I count how many times each item appears in a list?",
    "How do I encode binary data as base64 text?",
    "How do I percent-encode a string for use in a URL?",
    "How do I serialize a Python object to bytes with pickle?",
    "How do I read rows from a CSV file?",
    "How do I cache the results of a function call?",
    "How do I delete a directory and everything in it?",
    "How do I create a temporary directory?",
    "How do I find files matching a wildcard pattern?",
    "How do I compute the average of a list of numbers?",
    "How do I read the members of a zip archive?",
    "What does the with statement do?",
    "How do I define an abstract base class?",
    "How do I start a thread?",
    "How do I log a warning message?",
    "How do I parse command-line arguments?",
    "How do I compute a hash of some bytes?",
    "How do I make a deep copy of an object?",
    "How do I measure how long a piece of code takes?",
    "How do I read an environment variable?",
    "How do I send an HTTP request with the standard library?",
    "How do I work with dates in ISO 8601 format?",
    "How do I compress data with gzip?",
    "What is a generator expression?",
    "How do I write text to a file?",
    "How do I join strings with a separator?",
    "What does the global statement do?",
]


def question_pool() -> list[str]:
    """The questions above, then one per corpus entry ("What does json.loads do?"), so that no
    question repeats within a run (a repeat would be served from pipectl's prefix cache)."""
    rows = [json.loads(line) for line in (ROOT / "samples" / "corpus.jsonl").open()]
    names = [r["id"] for r in rows if not r["id"].startswith("topic.")]
    return QUESTIONS + [f"What does {name} do?" for name in names[::7]]


def without_rerank(text: str) -> str:
    """The pipeline with its rerank node removed: search keeps top_n passages, in its order."""
    import yaml

    spec = yaml.safe_load(text)
    nodes = spec["nodes"]
    rerank = nodes.pop("rerank")
    nodes["search"]["params"]["top_k"] = rerank["params"].get("top_n", 4)
    nodes["prompt"]["inputs"]["passages"] = "search.texts"
    spec["outputs"] |= {"sources": "search.keys", "passages": "search.texts"}
    return yaml.safe_dump(spec, sort_keys=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess, ready once GET /v2/health/ready answers 200; stopped by its PID."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path):
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}/v2/models/rag/generate_stream"

    def start(self, timeout_s: float) -> float:
        import urllib.request

        began = time.monotonic()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        while time.monotonic() - began < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                url = f"http://127.0.0.1:{self.port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - began
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None


async def one_request(session, url: str, query: str) -> dict:
    """Send one question; read the stream; times in seconds from the send."""
    began = time.perf_counter()
    first = None
    answer, sources, error = [], [], None
    async with session.post(url, json={"query": query}) as response:
        if response.status != 200:
            return {"error": f"HTTP {response.status}: {(await response.text())[:200]}"}
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                error = event["error"]
            if event.get("answer"):
                first = first or time.perf_counter()
                answer.append(event["answer"])
            if "sources" in event:
                found = event["sources"]
                sources = found if isinstance(found, list) else [found]
    end = time.perf_counter()
    return {
        "latency": end - began,
        "ttft": (first or end) - began,
        "answer": "".join(answer),
        "sources": sources,
        "error": error,
    }


async def drive(url: str, clients: int, questions: list[str]) -> dict:
    """`clients` concurrent loops share the questions; returns the level's figures."""
    import aiohttp

    todo = list(reversed(questions))
    results: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            while todo:
                results.append(await one_request(session, url, todo.pop()))

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - began
    ok = [r for r in results if not r.get("error") and r["answer"]]
    errors = [r["error"] or "empty answer" for r in results if r not in ok]
    lat = sorted(r["latency"] for r in ok) or [float("nan")]
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "errors": errors[:3],
        "wall_s": wall,
        "rps": len(ok) / wall,
        "p50_s": statistics.median(lat),
        "p99_s": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
        "ttft_p50_s": statistics.median([r["ttft"] for r in ok] or [float("nan")]),
        "answer_chars": statistics.mean([len(r["answer"]) for r in ok] or [0]),
        "sample": ok[0] if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--quick", action="store_true", help="fewer requests per level")
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length (both systems)")
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "rag.yaml"))
    parser.add_argument("--no-rerank", action="store_true", help="drop the rerank step in both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rag.json")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    logs = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    python = sys.executable
    pipectl = str(Path(python).parent / "pipectl")
    pipeline = Path(args.pipeline)
    served = logs / "rag.yaml"
    # the same answer length for both: the benchmark's copy of the pipeline sets max_tokens
    text = pipeline.read_text().replace("max_tokens: 128", f"max_tokens: {args.max_tokens}")
    text = text.replace("../samples/", f"{ROOT}/samples/")
    served.write_text(without_rerank(text) if args.no_rerank else text)
    (logs / "rag_steps.py").write_text((pipeline.parent / "rag_steps.py").read_text())
    (logs / "rag_prompt.j2").write_text((pipeline.parent / "rag_prompt.j2").read_text())
    port_a, port_b = free_port(), free_port()
    systems = [
        Server(
            "pipectl",
            [pipectl, "serve", str(served), "--host", "127.0.0.1", "--http-port", str(port_a),
             "--grpc-port", str(free_port())],
            port_a,
            logs / "pipectl.log",
        ),
        Server(
            "baseline",
            [python, str(ROOT / "bench" / "rag_baseline.py"), "--port", str(port_b),
             "--max-tokens", str(args.max_tokens), "--pipeline", str(served)],
            port_b,
            logs / "baseline.log",
        ),
    ]  # fmt: skip
    report: dict = {"max_tokens": args.max_tokens, "rerank": not args.no_rerank}
    report |= {"levels": {}, "load_s": {}}
    pool = question_pool()
    warmup, pool = pool[-2:], pool[:-2]
    try:
        for server in systems:
            report["load_s"][server.name] = server.start(timeout_s=900)
            print(f"{server.name}: ready in {report['load_s'][server.name]:.0f} s", flush=True)
            asyncio.run(drive(server.url, 2, warmup))
        for level in levels:
            requests = max(level, 4) if args.quick else max(2 * level, 8)
            questions, pool = pool[:requests], pool[requests:]
            for server in systems:  # the same questions for both, each unseen by both
                figures = asyncio.run(drive(server.url, level, questions))
                report["levels"].setdefault(str(level), {})[server.name] = figures
                print(_row(server.name, figures), flush=True)
    finally:
        for server in systems:
            server.stop()
    print(_summary(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"details: {args.out}; server logs: {logs}")


def _row(name: str, f: dict) -> str:
    errors = f" errors: {f['errors']}" if f["errors"] else ""
    return (
        f"{name:>8} clients {f['clients']:>3}: {f['ok']}/{f['requests']} ok, "
        f"{f['rps']:.2f} req/s, p50 {f['p50_s']:.2f} s, p99 {f['p99_s']:.2f} s, "
        f"TTFT p50 {f['ttft_p50_s']:.2f} s{errors}"
    )


def _summary(report: dict) -> str:
    lines = [
        "",
        f"answers of {report['max_tokens']} tokens at most",
        "| clients | system | req/s | p50 s | p99 s | TTFT p50 s |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for level, by_system in report["levels"].items():
        for name, f in by_system.items():
            lines.append(
                f"| {level} | {name} | {f['rps']:.2f} | {f['p50_s']:.2f} | {f['p99_s']:.2f} | "
                f"{f['ttft_p50_s']:.2f} |"
            )
        a, b = by_system.get("pipectl"), by_system.get("baseline")
        if a and b and b["rps"] > 0 and a["p50_s"] > 0:
            ratios.append(
                f"{level} clients: throughput x{a['rps'] / b['rps']:.1f}, "
                f"p50 latency x{a['p50_s'] / b['p50_s']:.2f} (pipectl / baseline)"
            )
    return "\n".join(lines + [""] + ratios)


if __name__ == "__main__":
    main()
