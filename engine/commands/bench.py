"""`pipectl bench PIPELINE_OR_URL`: load a pipeline at several concurrencies and report
requests/s, latency percentiles, errors, the server's per-node queue/batch/compute split, and for
streamed outputs TTFT, inter-token latency and tokens/s (perf_analyzer and `vllm bench serve`).

    pipectl bench pipelines/search.yaml --concurrency 1,8,32 --duration 30 --input query="..."
    pipectl bench grpc://127.0.0.1:8001 --model rag --input-file samples/requests.jsonl
    pipectl bench http://127.0.0.1:8000/v1 --model chat --input prompt="Hi" --target-p99-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput and latency at several concurrencies",
        description="Closed-loop load: at each concurrency, that many clients send requests back "
        "to back for --duration seconds (after --warmup). TARGET is a pipeline file (run in "
        "this process), grpc://HOST:PORT (KServe v2 gRPC), http://HOST:PORT (KServe v2 REST) or "
        "http://HOST:PORT/v1 (OpenAI chat completions, streamed).",
    )
    parser.add_argument("target", metavar="PIPELINE_OR_URL")
    parser.add_argument("--model", help="the served pipeline (default: the server's only one)")
    parser.add_argument(
        "-c", "--concurrency", default="1,8,32", metavar="N,N,...",
        help="concurrency levels (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=30.0, help="measured s per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s before each")
    parser.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE",
        help="a request input (repeatable; text for BYTES, JSON otherwise)",
    )  # fmt: skip
    parser.add_argument(
        "--input-file", metavar="JSONL",
        help='requests sent round robin, one per line: {"query": ".."} or {"inputs": {..}}',
    )  # fmt: skip
    parser.add_argument("--outputs", metavar="A,B", help="only these outputs (in process)")
    parser.add_argument(
        "--target-p99-ms", type=float, metavar="MS",
        help="find the highest concurrency whose p99 latency is at most MS, without errors",
    )  # fmt: skip
    parser.add_argument("--max-concurrency", type=int, default=1024, help="for the search")
    parser.add_argument("-o", "--format", choices=("table", "json"), default="table")
    parser.add_argument("--csv", metavar="PATH", help="also write one CSV row per level")
    parser.add_argument(
        "--api-key", default=os.environ.get("PIPECTL_API_KEY"),
        help="sent as 'authorization: Bearer KEY' (default: $PIPECTL_API_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--client-procs", type=int, default=1, metavar="N",
        help="share the clients among N processes (server targets only; default: 1)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _check_numbers(args: argparse.Namespace) -> None:
    """Durations and limits that cannot describe a run are refused by option name."""
    for option, value, ok, rule in (
        ("--duration", args.duration, args.duration > 0, "> 0 seconds"),
        ("--warmup", args.warmup, args.warmup >= 0, ">= 0 seconds"),
        ("--max-concurrency", args.max_concurrency, args.max_concurrency >= 1, ">= 1"),
        ("--target-p99-ms", args.target_p99_ms, (args.target_p99_ms or 1) > 0, "> 0 ms"),
        ("--client-procs", args.client_procs, args.client_procs >= 1, ">= 1"),
    ):
        if not ok:  # NaN fails every rule: it compares false
            raise ValueError(f"{option} must be {rule}, not {value}")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--concurrency {text!r}: expected numbers like 1,8,32") from None
    if not levels or min(levels) < 1:
        raise ValueError(f"--concurrency {text!r}: levels must be at least 1")
    return levels


async def bench(args: argparse.Namespace, target) -> dict:
    """Open `target`, measure every level (or search for --target-p99-ms), close it."""
    from engine.bench.inputs import build_requests
    from engine.bench.load import run_level, search_p99

    levels = _levels(args.concurrency)
    await target.open()
    try:
        requests = build_requests(target.inputs, args.input, args.input_file, target.knows_optional)

        helpers = None
        if args.client_procs > 1:
            from engine.bench.procs import ClientProcesses

            helpers = ClientProcesses(args.client_procs - 1, args.target, target.name, args.api_key)

        async def measure(n: int) -> dict:
            return await run_level(
                target, requests, n, args.duration, args.warmup, not args.no_progress, helpers
            )

        report: dict = {"target": target.description, "model": target.name,
                        "duration_s": args.duration, "streaming": target.streaming}  # fmt: skip
        if args.target_p99_ms is None:
            report["levels"] = [await measure(n) for n in levels]
            return report
        best, results = await search_p99(measure, args.target_p99_ms, levels, args.max_concurrency)
        report["levels"] = [results[n] for n in sorted(results)]
        search = {"target_p99_ms": args.target_p99_ms, "concurrency": best}
        if best:
            search |= {"rps": results[best]["rps"], "p99_ms": results[best]["latency_ms"]["p99"]}
        report["search"] = search
        return report
    finally:
        await target.close()


def _event_loop_run(coroutine):
    """Run on uvloop when installed (as `pipectl serve` does), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run(args: argparse.Namespace) -> int:
    from engine.bench.remote import BenchError
    from engine.bench.report import table, to_csv
    from engine.bench.target_url import make_target
    from engine.errors import PipelineError

    outputs = [o.strip() for o in args.outputs.split(",")] if args.outputs else None
    try:
        _levels(args.concurrency)
        _check_numbers(args)
        if args.client_procs > 1 and not args.target.startswith(("grpc://", "http")):
            raise ValueError(
                "--client-procs needs a server URL: a pipeline file runs in this process"
            )
        target = make_target(args.target, args.model, args.api_key, outputs)
        report = _event_loop_run(bench(args, target))
    except (BenchError, PipelineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.csv:
        Path(args.csv).write_text(to_csv(report), encoding="utf-8")
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
    if "search" in report:
        return 0 if report["search"]["concurrency"] else 2
    return 0
