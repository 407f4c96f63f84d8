"""The LLM engine's decode step at batch 64 against its matmul bound, and where the step goes.

    .venv/bin/python bench/llm_step.py [--dtype fp32] [--quantization none] [--threads 1]
        [--attention-backend auto] [--compare-attention torch] [--batch 64]

64 prompts of ~100 tokens (`--batch`) are prefilled, then decode steps (one token for each
sequence, sampling included) are timed. The matmul bound is the same step's linear layers and
LM head alone: the model's own projection callables (packed weights, same threads) run on random
[64, K] inputs back to back. Steps and bound alternate in rounds so both see the same machine
load; medians are printed with their ratio (issue 13's target: within 1.4x). Then
torch.profiler samples five steps and the self time of its ops is grouped: linears, attention
(gather, matmuls, softmax, cache writes), element-wise (RMSNorm, RoPE, SiLU, adds), sampling,
and the rest (Python, tensor creation). With `--compare-attention torch`, each round also times steps
with decode attention and the element-wise parts on torch ops (attention_backend torch) on the same
engine (same sequences, same cache), for a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.llm import MODEL, make_prompts
from nodes.llm.config import ATTENTION_BACKENDS, EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.layer_ops import TorchOps
from nodes.llm.sampling import SamplingParams
from nodes.paths import resolve_path

GROUPS = {
    "linears": ("mm", "addmm", "_mkl_linear", "_linear_pointwise", "_weight_int8pack_mm",
                "_weight_int4pack_mm_for_cpu", "linear"),
    "attention": ("bmm", "index_select", "copy_", "_softmax", "index_copy_", "matmul",
                  "_scaled_dot_product_flash_attention_for_cpu", "clone", "contiguous",
                  "pipectl::paged_decode", "pipectl::paged_store"),
    "element-wise": ("mul", "add", "add_", "mul_", "silu", "rms_norm", "_fused_rms_norm", "pow",
                     "mean", "rsqrt", "cat", "neg", "sum", "div_", "embedding", "index", "_to_copy"),
    "sampling": ("argmax", "topk", "sort", "softmax", "log_softmax", "gather", "max"),
}  # fmt: skip


def decoding_engine(
    dtype: str, quantization: str, threads: int, batch: int = 64, attention_backend: str = "auto"
) -> LLMEngine:
    """An engine whose `batch` sequences are past their prompts: every step() is one decode."""
    config = EngineConfig(dtype=dtype, quantization=quantization, kv_cache_bytes=1 << 30,
                          max_num_seqs=batch, num_threads=threads,
                          attention_backend=attention_backend)  # fmt: skip
    engine = LLMEngine(resolve_path(MODEL), config)
    params = SamplingParams(max_tokens=1000, temperature=0, ignore_eos=True)
    for prompt in make_prompts(engine.tokenizer, batch, 100):
        engine.add_request(prompt, params)
    sched = engine.scheduler
    while True:  # requests reach the scheduler at a step: step until all are past their prompts
        engine.step()
        running = sched.running
        if len(running) == batch and all(s.num_computed_tokens >= len(s) - 1 for s in running):
            return engine


def matmul_bound(engine: LLMEngine, batch: int = 64):
    """A function running every linear of one decode step (layers and LM head) on [batch, K]."""
    cfg, model = engine.model_config, engine.runner.model
    attn = cfg.num_heads * cfg.head_dim
    widths = (cfg.hidden_size, attn, cfg.hidden_size, cfg.intermediate_size)
    dtype = model.dtype
    inputs = {k: torch.randn(batch, k).to(dtype) for k in {*widths, cfg.hidden_size}}
    calls = [(layer[i], inputs[k]) for layer in model.layers for i, k in zip((1, 2, 4, 5), widths)]
    calls.append((model.lm_head, inputs[cfg.hidden_size]))

    @torch.inference_mode()
    def run():
        for fn, x in calls:
            fn(x)

    return run


def timed(fn, times: list[float], cpu: list[float], n: int) -> None:
    """Wall and this thread's CPU seconds of n calls (CPU time: less noisy on a shared machine)."""
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)


def on_torch_ops(engine: LLMEngine):
    """engine.step with decode attention and the element-wise parts on torch ops for the call
    (attention_backend torch), on the same engine, sequences and cache."""
    runner, model = engine.runner, engine.runner.model
    kernel, ops = runner.cpu_kernel, model.ops
    plain = TorchOps(model.cos, model.sin, engine.model_config.rms_norm_eps)

    def step():
        runner.cpu_kernel, model.ops = None, plain
        try:
            engine.step()
        finally:
            runner.cpu_kernel, model.ops = kernel, ops

    return step


def breakdown(engine: LLMEngine, steps: int = 5) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    shares: dict[str, float] = dict.fromkeys([*GROUPS, "other ops"], 0.0)
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::").removeprefix("mkl::").removeprefix("mkldnn::")
        group = next((g for g, ops in GROUPS.items() if name in ops), "other ops")
        shares[group] += event.self_cpu_time_total / 1e6
    return shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64, help="decoding sequences")
    ap.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    ap.add_argument("--compare-attention", choices=["torch"], help="also time steps on torch ops")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = decoding_engine(args.dtype, args.quantization, args.threads, args.batch,
                             attention_backend=args.attention_backend)  # fmt: skip
    kernel = "C kernels" if engine.runner.cpu_kernel else "torch ops"
    runs = {f"step ({kernel})": engine.step, "matmul bound": matmul_bound(engine, args.batch)}
    if args.compare_attention:
        runs["step (torch ops)"] = on_torch_ops(engine)
    times = {name: ([], []) for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            timed(fn, *times[name], 3)
    print(f"# bench/llm_step.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: dtype "
          f"{args.dtype}, quantization {args.quantization}, {args.threads} thread(s), attention "
          f"{kernel}, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
    bound, bound_cpu = (statistics.median(t) for t in times["matmul bound"])
    for name, (wall, cpu) in times.items():
        step, step_cpu = statistics.median(wall), statistics.median(cpu)
        print(f"{name} at {args.batch}: median {step * 1e3:.0f} ms (min {min(wall) * 1e3:.0f}), CPU "
              f"{step_cpu * 1e3:.0f} ms; / bound {step / bound:.2f}x, CPU {step_cpu / bound_cpu:.2f}x; "
              f"{args.batch / step:.1f} tokens/s")  # fmt: skip
    start = time.perf_counter()
    shares = breakdown(engine)
    wall = time.perf_counter() - start
    ops = sum(shares.values())
    shares["outside ops (Python, waiting for a core)"] = max(0.0, wall - ops)
    print(
        "\n| part of the step | ms per step | share of op time | share of wall |\n|---|---|---|---|"
    )
    for name, seconds in shares.items():
        of_ops = f"{seconds / ops:.0%}" if name in GROUPS or name == "other ops" else ""
        print(f"| {name} | {seconds / 5 * 1e3:.0f} | {of_ops} | {seconds / wall:.0%} |")
    engine.shutdown()


if __name__ == "__main__":
    main()
