"""The LLM engine on one device at batch 1 and 64, and its decode step against the memory bound.

    python3 bench/llm_device.py --model DIR --device cuda [--dtype auto] [--new-tokens 128]
        [--peak-gbps 4800] [--rows FILE]

Throughput is bench/llm.py's measure (`ours_throughput`: generate() of every prompt, greedy,
EOS ignored, prompts of ~100 tokens) at 64 concurrent and at batch 1. A decode step reads every
weight once (the layers' linears and norms, the LM head) and each sequence's K and V so far, so
its floor is bytes / memory bandwidth (Williams et al., "Roofline", CACM 2009). Two floors are
printed: at the device's rated bandwidth (`--peak-gbps`; H200: 4,800 GB/s, NVIDIA's data sheet)
and at the copy bandwidth measured here in the same run (a device-to-device copy, bytes read +
written / time). Markdown rows go to stdout and, with `--rows`, are appended to FILE
(bench/gpu_check.sh collects them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.llm import make_prompts, ours_throughput
from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams

RATED_GBPS = {"H200": 4800.0, "H100 80GB HBM3": 3350.0}  # NVIDIA's data sheets (SXM parts)


def emit(rows: list[str], path: Path | None) -> None:
    """Print markdown rows; append them to `path` too when given (bench/gpu_check.sh's table)."""
    print("\n".join(rows))
    if path:
        with path.open("a") as fh:
            fh.write("\n".join(rows) + "\n")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def copy_gbps(device: str, megabytes: int) -> float:
    """Bytes read + written per second by a device-to-device copy of `megabytes` (best of 5)."""
    src = torch.empty(megabytes << 18, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best / 1e9


def step_bytes(engine: LLMEngine) -> tuple[int, int]:
    """(weight bytes, K/V bytes) one decode step reads for the sequences now running."""
    cfg, elem = engine.model_config, engine.runner.model.dtype.itemsize
    h, attn, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = h * (attn + 2 * kv) + attn * h + 3 * h * cfg.intermediate_size + 2 * h
    weights = (cfg.num_layers * layer + cfg.vocab_size * h + h) * elem
    context = sum(len(seq) for seq in engine.scheduler.running)
    return weights, context * cfg.num_layers * 2 * kv * elem


def decode_steps(engine: LLMEngine, prompts, device: str, steps: int) -> tuple[float, int, int]:
    """Median seconds of a decode step with every prompt past its prefill; the bytes it reads."""
    engine.shutdown()  # the loop thread of generate() must not step beside this one
    params = SamplingParams(max_tokens=steps + 1000, temperature=0, ignore_eos=True)
    for prompt in prompts:
        engine.add_request(prompt, params)
    sched = engine.scheduler
    while sched.waiting or any(s.num_computed_tokens < s.num_prompt_tokens for s in sched.running):
        engine.step()
    for _ in range(3):
        engine.step()  # warm-up: kernels compiled, caches hot
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        engine.step()
        sync(device)
        times.append(time.perf_counter() - start)
    weights, kv = step_bytes(engine)  # context at the last step: within `steps` of the median's
    for seq in list(sched.running):
        engine.abort(seq.request_id)
    engine.step()  # the abort frees the sequences' blocks
    return statistics.median(times), weights, kv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a Hugging Face Llama folder or a GGUF file")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="decode steps timed per batch size")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--peak-gbps", type=float, help="rated memory bandwidth (H200: 4800)")
    ap.add_argument("--copy-mb", type=int, default=1024, help="size of the copy measured")
    ap.add_argument("--rows", type=Path, help="append the markdown rows to this file")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.peak_gbps is None and args.device.startswith("cuda"):
        name = torch.cuda.get_device_name(args.device)
        args.peak_gbps = next((gbps for key, gbps in RATED_GBPS.items() if key in name), None)
    config = EngineConfig(dtype=args.dtype, device=args.device, kv_cache_bytes=1 << 30,
                          max_num_seqs=max(batches), num_threads=0)  # fmt: skip
    engine = LLMEngine(args.model, config)
    prompts = make_prompts(engine.tokenizer, max(batches), 100)
    engine.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0))  # warm up
    copy = copy_gbps(args.device, args.copy_mb)
    rows = [f"| llm | copy bandwidth, {args.device} | {copy:,.0f} GB/s | read + written |"]
    for batch in batches:
        rate = statistics.median(
            ours_throughput(engine, prompts[i : i + batch], args.new_tokens)[0]
            for i in range(3 if batch == 1 else 1)
        )
        step, weights, kv = decode_steps(engine, prompts[:batch], args.device, args.steps)
        floor = (weights + kv) / (copy * 1e9)  # the copy's traffic, reads and writes alike
        rated = ""
        if args.peak_gbps:
            rated = f"; rated floor {(weights + kv) / (args.peak_gbps * 1e6):.3f} ms"
        total = (weights + kv) / 1e6
        rows.append(f"| llm | tokens/s at batch {batch}, {engine.dtype.dtype}, "
                    f"{args.new_tokens} new | {rate:,.1f} | `generate()`, greedy |")  # fmt: skip
        rows.append(f"| llm | decode step at batch {batch} | {step * 1e3:.2f} ms | reads "
                    f"{total:.0f} MB (weights {weights / 1e6:.0f}, KV {kv / 1e6:.0f}): "
                    f"copy-bandwidth floor {floor * 1e3:.3f} ms{rated}; step / floor "
                    f"{step / floor:.1f}x |")  # fmt: skip
    engine.shutdown()
    emit(rows, args.rows)


if __name__ == "__main__":
    main()
