"""`pipectl run FILE`: run a pipeline in-process on one request or a JSONL file of requests.

    pipectl run pipelines/rag.yaml --input query="How do I read a file?"
    pipectl run pipelines/search.yaml --input-file requests.jsonl --output results.jsonl
    pipectl run p.yaml --input x=[1,2,3] --outputs answer -o json --trace

Text mode streams streamed outputs as they are generated, then prints the other outputs and a
per-node timing table. JSON mode prints one object per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

from engine.coercion import coerce_input, to_jsonable
from engine.commands import ray_address
from engine.commands.validate import compile_or_report
from engine.errors import InvalidInput, PipelineError, RequestError
from engine.plan import Plan
from engine.result import NodeTrace, Result
from nodes.base import TensorSpec
from nodes.jsonl import read_objects

MAX_NUMBERS = 8  # numbers shown per output in text mode
MAX_CHARS = 240  # characters shown per listed text in text mode


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a pipeline on one request or a file of requests",
        description="Compile a pipeline, load its nodes in this process and run requests. "
        "Values of --input are text for BYTES inputs and JSON (numbers or lists) otherwise.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline input (repeatable); with --input-file, a default for every line",
    )
    parser.add_argument(
        "--input-file",
        metavar="JSONL",
        help='requests, one JSON object per line: {"query": "..."} or {"id": .., "inputs": {..}}',
    )
    parser.add_argument("--output", metavar="JSONL", help="write results here (--input-file)")
    parser.add_argument("--outputs", metavar="A,B", help="only these pipeline outputs")
    parser.add_argument("--trace", action="store_true", help="include per-node traces as JSON")
    parser.add_argument("-o", "--format", choices=("text", "json"), default="text")
    parser.add_argument("--timeout", type=float, metavar="S", help="deadline per request")
    parser.add_argument(
        "-c", "--concurrency", type=int, default=32, help="requests in flight (--input-file)"
    )
    ray_address.add_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    timeout = args.timeout
    if timeout is not None and not 0 < timeout < float("inf"):  # NaN fails it too
        print(f"error: --timeout must be a number of seconds > 0, not {timeout}", file=sys.stderr)
        return 1
    if args.concurrency < 1:
        print(f"error: --concurrency must be >= 1, not {args.concurrency}", file=sys.stderr)
        return 1
    plan = compile_or_report(args.file)
    if plan is None:
        return 1
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    try:
        if outputs is not None:
            unknown = [o for o in outputs if o not in plan.outputs]
            if unknown:
                raise RequestError(
                    f"unknown output {unknown[0]!r}; outputs: {', '.join(plan.outputs)}"
                )
        defaults = parse_inputs(plan, args.input)
        requests = _read_requests(plan, args.input_file, defaults) if args.input_file else None
    except (PipelineError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from engine.executor import Executor

    ray_address.apply(args)
    executor = Executor(plan)
    try:
        executor.start(progress=_loading)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        ray_address.disconnect()
        return 1
    try:
        if requests is not None:
            if not args.output:
                return asyncio.run(_run_file(executor, requests, outputs, args, sys.stdout))
            with open(args.output, "w", encoding="utf-8") as sink:
                return asyncio.run(_run_file(executor, requests, outputs, args, sink))
        return asyncio.run(_run_one(executor, defaults, outputs, args))
    finally:
        executor.stop(drain=False)
        ray_address.disconnect()


def _loading(node: str, loaded: int, total: int) -> None:
    print(f"loaded {node} ({loaded}/{total})", file=sys.stderr, flush=True)


# ---- inputs ------------------------------------------------------------------------------------
def parse_inputs(plan: Plan, pairs: list[str]) -> dict[str, np.ndarray]:
    """`name=value` pairs as arrays of the pipeline's input types."""
    inputs = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--input {pair!r}: expected NAME=VALUE")
        spec = _input_spec(plan, name)
        inputs[name] = coerce_input(name, spec, parse_value(spec, text, name))
    return inputs


def parse_value(spec: TensorSpec, text: str, name: str = "") -> Any:
    """Text for BYTES (a JSON list where the shape holds several values); JSON otherwise.
    Raises ValueError naming the input `name`."""
    if spec.dtype == "BYTES":
        several = any(d != 1 for d in spec.shape)
        if several and text.lstrip().startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return text
            if isinstance(value, list):
                return value
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(
            f"--input {name}: {text!r} is not a number or a JSON list ({spec.dtype})"
        ) from None


def _input_spec(plan: Plan, name: str) -> TensorSpec:
    if name not in plan.inputs:
        raise InvalidInput.unknown_input(name, plan.inputs)
    return plan.inputs[name]


def _read_requests(plan: Plan, path: str, defaults: dict) -> list[tuple[str, dict]]:
    requests = []
    for number, record in read_objects(path):
        if isinstance(record.get("inputs"), dict):
            request_id, values = str(record.get("id", number)), record["inputs"]
        else:
            request_id, values = str(number), record
        inputs = dict(defaults)
        for name, value in values.items():
            try:
                inputs[name] = coerce_input(name, _input_spec(plan, name), value)
            except (PipelineError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
        requests.append((request_id, inputs))
    return requests


# ---- one request ----------------------------------------------------------------------------
async def _run_one(executor, inputs: dict, outputs: list[str] | None, args) -> int:
    plan: Plan = executor.plan
    wanted = list(plan.outputs) if outputs is None else outputs
    streamed = sorted(plan.streamed_outputs() & set(wanted), key=wanted.index)
    text = args.format == "text"
    begin = time.perf_counter()
    try:
        if text and streamed:
            result = await _stream_to_terminal(executor, inputs, outputs, streamed, args.timeout)
        else:
            result = await executor.submit(inputs, outputs, timeout_s=args.timeout, trace=True)
    except RequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if text:
        sys.stdout.write(format_outputs(result, skip=streamed))
        sys.stdout.write("\n" + format_timings(plan, result.trace))
        print(f"total {(time.perf_counter() - begin) * 1e3:.1f} ms")
        if args.trace:
            print(json.dumps([t.to_dict() for t in result.trace], indent=2))
    else:
        print(json.dumps(_record(result.request_id, result, args.trace), ensure_ascii=False))
    return 0


async def _stream_to_terminal(executor, inputs, outputs, streamed, timeout) -> Result:
    out = sys.stdout
    started = set()
    async for event in executor.stream(inputs, outputs, timeout_s=timeout, trace=True):
        for name in streamed:
            if name in event.outputs:
                if name not in started:
                    started.add(name)
                    out.write(f"{name}: ")
                out.write(_as_text(event.outputs[name]))
        out.flush()
        if event.final:
            if started:
                out.write("\n")
            assert event.result is not None
            return event.result
    raise RuntimeError("stream ended without a final event")


def _as_text(arr: np.ndarray) -> str:
    return "".join(
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.flat
    )


def format_outputs(result: Result, skip: list[str] = ()) -> str:
    """Each output on its line: numbers inline (long ones shortened), several texts as a
    numbered list with each entry on one line (long ones shortened)."""
    lines = []
    for name, arr in result.outputs.items():
        if name in skip:
            continue
        flat = arr.reshape(-1)
        if arr.size == 1:
            lines.append(f"{name}: {_scalar(flat[0])}")
        elif arr.dtype != object:
            shown = ", ".join(_scalar(v) for v in flat[:MAX_NUMBERS])
            more = f", ... ({arr.size} values, shape {list(arr.shape)})"
            lines.append(f"{name}: [{shown}{more if arr.size > MAX_NUMBERS else ''}]")
        else:
            lines.append(f"{name}:")
            for index, value in enumerate(flat, 1):
                text = " ".join(_scalar(value).split())
                if len(text) > MAX_CHARS:
                    text = text[: MAX_CHARS - 1] + "…"
                lines.append(f"  [{index}] {text}")
    return "\n".join(lines) + ("\n" if lines else "")


def _scalar(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value.item() if isinstance(value, np.generic) else value)


def format_timings(plan: Plan, trace: list[NodeTrace]) -> str:
    """The per-node table: queue ms, batch size, compute ms, in pipeline order."""
    by_node = {t.node: t for t in trace}
    rows = [("node", "queue ms", "batch", "compute ms")]
    for name in plan.nodes:
        t = by_node.get(name)
        if t is None:
            continue
        if t.skipped:
            rows.append((name, "-", "-", "skipped"))
        else:
            rows.append((name, f"{t.queue_ms:.2f}", str(t.batch_size), f"{t.compute_ms:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def _record(request_id: str, result: Result | None, trace: bool, error=None) -> dict:
    record: dict[str, Any] = {"id": request_id}
    if result is not None:
        record["outputs"] = {n: to_jsonable(v) for n, v in result.outputs.items()}
        if trace:
            record["trace"] = [t.to_dict() for t in result.trace]
    else:
        record["error"] = {
            "type": type(error).__name__,
            "message": str(error),
            "node": getattr(error, "node", ""),
        }
    return record


# ---- a file of requests ---------------------------------------------------------------------
async def _run_file(executor, requests, outputs, args, sink) -> int:
    from tqdm import tqdm

    limit = asyncio.Semaphore(max(1, args.concurrency))
    records: dict[int, dict] = {}
    next_index = 0
    failed = 0
    bar = tqdm(total=len(requests), unit="req", file=sys.stderr, disable=None)

    async def one(index: int, request_id: str, inputs: dict) -> None:
        nonlocal next_index, failed
        async with limit:
            try:
                result = await executor.submit(
                    inputs, outputs, request_id=request_id, timeout_s=args.timeout, trace=args.trace
                )
                records[index] = _record(request_id, result, args.trace)
            except RequestError as exc:
                failed += 1
                records[index] = _record(request_id, None, False, exc)
        bar.update(1)
        while next_index in records:  # results go out in input order
            sink.write(json.dumps(records.pop(next_index), ensure_ascii=False) + "\n")
            next_index += 1

    begin = time.perf_counter()
    try:
        await asyncio.gather(*(one(i, rid, inp) for i, (rid, inp) in enumerate(requests)))
    finally:
        bar.close()
    elapsed = time.perf_counter() - begin
    rate = len(requests) / elapsed if elapsed > 0 else 0.0
    print(
        f"{len(requests)} requests in {elapsed:.2f} s ({rate:.1f}/s), {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0
