"""`dtype: auto` on this CPU: a matmul and the sample corpus's index build in fp32, bf16 and auto,
in one run. Prints a markdown table with the CPU's capability.

    .venv/bin/python bench/dtype.py [--corpus samples/corpus.jsonl] [--limit N] [--dtypes fp32,bf16,auto]

Each index build runs `pipectl index build` in its own process (as a user would) on a copy of
pipelines/search.yaml whose encoder has the dtype under test, into a temporary folder (never
samples/index); passages/s is the corpus size over the command's wall time, loading included,
and passages per CPU second over the command's own CPU time (steadier on a shared machine).
The matmul is the [64,576] @ [576,1536] of PERF-NOTES.md on one thread (the median of 50).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.compute_dtype import cpu_info, resolve_dtype


def matmul_ms(dtype: str) -> float:
    import torch

    from nodes.compute_dtype import torch_dtype

    torch.set_num_threads(1)
    a = torch.randn(64, 576, dtype=torch_dtype(dtype))
    b = torch.randn(576, 1536, dtype=torch_dtype(dtype))
    for _ in range(5):
        a @ b
    times = []
    for _ in range(50):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def build(corpus: Path, dtype: str, tmp: Path) -> tuple[float, float, int, str]:
    """(wall s, CPU s, passages, dtype recorded in meta.json) of one index build. CPU time is
    the command's own (user + system): on a shared machine it moves far less than wall time."""
    text = (ROOT / "pipelines" / "search.yaml").read_text()
    pipeline = tmp / f"search-{dtype}.yaml"
    pipeline.write_text(text.replace("dtype: auto", f"dtype: {dtype}"))
    out = tmp / f"index-{dtype}"
    cmd = [sys.executable, "-m", "engine.cli", "index", "build", str(corpus),
           "--pipeline", str(pipeline), "--out", str(out), "--device", "cpu"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "meta.json").read_text())
    return wall, cpu, int(meta["count"]), meta.get("dtype", "?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "samples" / "corpus.jsonl"))
    ap.add_argument("--limit", type=int, default=0, help="first N passages only (0: all)")
    ap.add_argument("--dtypes", default="fp32,bf16,auto")
    args = ap.parse_args()
    dtypes = args.dtypes.split(",")
    info = cpu_info()
    auto = resolve_dtype("auto", "cpu")
    print(f"cpu: {info.describe() if info else 'unknown'}; auto: {auto.reason}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = Path(args.corpus)
        if args.limit:
            corpus = tmp / "corpus.jsonl"
            with open(args.corpus, encoding="utf-8") as src:
                corpus.write_text("".join(itertools.islice(src, args.limit)), encoding="utf-8")
        rows = []
        for dtype in dtypes:
            ms = matmul_ms(auto.dtype if dtype == "auto" else dtype)
            wall, cpu, count, used = build(corpus, dtype, tmp)
            rows.append((dtype, used, ms, wall, count / wall, count / cpu))
            print(f"{dtype}: {used}, matmul {ms:.2f} ms, {count} passages in {wall:.1f} s "
                  f"({cpu:.1f} CPU s)", flush=True)  # fmt: skip
    fp32 = next((r for r in rows if r[0] == "fp32"), None)
    print("\n| dtype | runs as | matmul ms | index build s | passages/s | passages per CPU s "
          "| vs fp32 (CPU) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for dtype, used, ms, wall, rate, per_cpu in rows:
        ratio = f"{per_cpu / fp32[5]:.2f}×" if fp32 else "-"
        print(
            f"| {dtype} | {used} | {ms:.2f} | {wall:.1f} | {rate:.1f} | {per_cpu:.1f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
