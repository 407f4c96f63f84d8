"""int4 products of many rows: torch's int4 kernel against a dense GEMM on the weight dequantized
on the fly (nodes/llm/quant.py DENSE_FROM_ROWS), alternating in one engine.

    .venv/bin/python bench/int4_prefill.py [--prompts 64] [--length 105] [--max-tokens 32]

SmolLM2's Q4_1 GGUF as shipped (`quantization: auto`, fp32 elsewhere, one thread), prefix caching
off so every round computes every prompt; greedy, EOS ignored. Prints wall and CPU seconds per
round for each path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llm import MODEL, make_prompts
from nodes.llm import quant
from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.sampling import SamplingParams
from nodes.paths import resolve_path

PATHS = {"dense from 256 rows": quant.DENSE_FROM_ROWS, "int4 kernel always": 1 << 62}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--length", type=int, default=105)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    config = EngineConfig(dtype="fp32", quantization="auto", enable_prefix_caching=False,
                          kv_cache_bytes=256 << 20, num_threads=1)  # fmt: skip
    engine = LLMEngine(resolve_path(MODEL), config)
    prompts = make_prompts(engine.tokenizer, args.prompts, args.length)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    engine.generate(prompts[:2], params)
    for _ in range(args.rounds):
        for label, rows in PATHS.items():
            quant.DENSE_FROM_ROWS = rows
            cpu, wall = time.process_time(), time.perf_counter()
            engine.generate(prompts, params)
            print(f"{label}: wall {time.perf_counter() - wall:.1f} s, "
                  f"CPU {time.process_time() - cpu:.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
