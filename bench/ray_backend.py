"""backend: ray against backend: local, side by side in one run, on this machine.

    .venv/bin/python bench/ray_backend.py [--seconds 4] [--rounds 2] [--parts hop,search,python]

1. hop: one `run_batch` call through a Ray actor (a `python` identity node) against the same
   call on a local instance, for batches of 1 and 64 items of [384] fp32 and one item of 16 MiB.
   The difference is the cost of one Ray hop per batch; the CPU time of this process per call is
   what a hop costs the serving process; 2 x 16 MiB / time is the object store's throughput (the
   arrays go there and back).
2. search: pipelines/search.yaml at 1 and 32 closed-loop clients, local threads against each
   node in a Ray actor (num_cpus 0.5 each), through `pipectl bench`'s in-process driver.
3. python: a Python-bound `python` node (a pure-Python loop over the text, which holds the GIL)
   with 2 instances: 2 threads in this process against 2 Ray actors, at 32 clients.
Rounds alternate between the backends; medians are printed as markdown rows. Ray runs as a
private local instance (ray.init) unless RAY_ADDRESS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes.openmp import configure_openmp_waiting

configure_openmp_waiting()  # as `pipectl` does, before torch loads: nodes/openmp.py

from engine.bench.load import run_level
from engine.bench.targets import InProcess
from engine.compiler import compile_file
from engine.executor import Executor
from engine.instance import LocalInstance

FUNCTIONS = '''\
def identity(items):
    return [{"y": item["x"]} for item in items]


def words(items, repeat=400):
    """Pure Python: count word hashes, the way a hand-written tokenizer holds the GIL."""
    out = []
    for item in items:
        text = item["text"][0].decode() * repeat
        out.append({"n": [sum(1 for w in text.split() if hash(w) % 3 == 0)]})
    return out
'''


def _pipeline(folder: Path, name: str, node: str, placement: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"apiVersion: pipectl/v1\nname: {name}\n" + node + f"    placement: {placement}\n"
    )
    return path


IDENTITY = (
    "inputs: {x: {dtype: FP32, shape: [-1]}}\noutputs: {y: n.y}\nnodes:\n  n:\n    kind: python\n"
    "    params: {function: fns.py:identity, inputs: {x: {dtype: FP32, shape: [-1]}},"
    " outputs: {y: {dtype: FP32, shape: [-1]}}}\n    inputs: {x: $inputs.x}\n"
)
WORDS = (
    "inputs: {text: {dtype: BYTES, shape: [1]}}\noutputs: {n: n.n}\nnodes:\n  n:\n    kind: python\n"
    "    params: {function: fns.py:words, inputs: {text: {dtype: BYTES, shape: [1]}},"
    " outputs: {n: {dtype: INT64, shape: [1]}}}\n    inputs: {text: $inputs.text}\n"
    "    batching: {max_batch_size: 8, max_queue_delay_ms: 1}\n"
)


def hop(folder: Path, rounds: int) -> None:
    from engine.backends.ray_cluster import connect
    from engine.backends.ray_instance import RayInstance

    connect()
    local_plan = compile_file(_pipeline(folder, "hop_local", IDENTITY, "{backend: local}"))
    ray_plan = compile_file(_pipeline(folder, "hop_ray", IDENTITY, "{backend: ray}"))
    node_l, node_r = local_plan.nodes["n"], ray_plan.nodes["n"]
    local = LocalInstance(node_l, node_l.instances[0], local_plan.base_dir)
    remote = RayInstance(node_r, node_r.instances[0], ray_plan.base_dir)
    local.load()
    remote.load()
    rng = np.random.default_rng(0)
    cases = {
        "1 x [384] fp32": ([{"x": rng.standard_normal(384, dtype=np.float32)}], 300),
        "64 x [384] fp32": ([{"x": rng.standard_normal(384, dtype=np.float32)} for _ in range(64)], 200),
        "1 x 16 MiB fp32": ([{"x": rng.standard_normal(4 << 20, dtype=np.float32)}], 20),
    }  # fmt: skip
    print(
        f"\n### one batch through a Ray actor against a local call ({time.strftime('%Y-%m-%d')})\n"
    )
    print(
        "| batch | local µs | Ray actor µs (rounds) | Ray hop µs | serving-process CPU µs per hop "
        "| object store MB/s |"
    )
    print("|---|---|---|---|---|---|")
    for label, (items, calls) in cases.items():
        times: dict[str, list[float]] = {"local": [], "ray": []}
        cpu: list[float] = []
        for _ in range(rounds):
            for name, instance in (("local", local), ("ray", remote)):
                instance.run_batch(items)  # warm
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    instance.run_batch(items)
                times[name].append((time.perf_counter() - start) / calls * 1e6)
                if name == "ray":  # this process's threads, Ray's core worker included
                    cpu.append((time.process_time() - cpu_start) / calls * 1e6)
        lo, ra = statistics.median(times["local"]), statistics.median(times["ray"])
        size = sum(i["x"].nbytes for i in items)
        rate = f"{2 * size / (ra * 1e-6) / 1e6:,.0f}" if size > 1 << 20 else "-"
        each = ", ".join(f"{t:,.0f}" for t in times["ray"])
        front = statistics.median(cpu)
        print(
            f"| {label} | {lo:,.0f} | {ra:,.0f} ({each}) | {ra - lo:,.0f} | {front:,.0f} | {rate} |"
        )
    remote.close()
    local.close()


def drive(executor: Executor, inputs: dict, concurrency: int, seconds: float) -> dict:
    target = InProcess.of(executor)
    return asyncio.run(run_level(target, [inputs], concurrency, seconds, 0.5, progress=False))


def compare(title: str, paths: dict[str, Path], inputs: dict, levels, seconds, rounds) -> None:
    executors = {}
    try:
        for name, path in paths.items():
            executors[name] = Executor(compile_file(path))
            executors[name].start()
            drive(executors[name], inputs, 4, 1.0)  # warm-up
        print(f"\n### {title} ({time.strftime('%Y-%m-%d')})\n")
        print("| clients | backend | requests/s (rounds) | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for level in levels:
            runs: dict[str, list[dict]] = {name: [] for name in paths}
            for _ in range(rounds):  # alternate, so that a noisy neighbour hits both
                for name, executor in executors.items():
                    runs[name].append(drive(executor, inputs, level, seconds))
            medians = {}
            for name, results in runs.items():
                ordered = sorted(results, key=lambda r: r["rps"])
                r = medians[name] = ordered[len(ordered) // 2]
                each = ", ".join(f"{x['rps']:,.0f}" for x in results)
                lat = r["latency_ms"]
                print(
                    f"| {level} | {name} | {r['rps']:,.0f} ({each}) | {lat['p50']:.1f} | {lat['p99']:.1f} |"
                )
            names = list(paths)
            ratio = medians[names[1]]["rps"] / medians[names[0]]["rps"]
            print(f"| {level} | {names[1]} / {names[0]} | {ratio:.2f}x | | |")
    finally:
        for executor in executors.values():
            executor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", default="hop,search,python")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "fns.py").write_text(FUNCTIONS)
        if "hop" in parts:
            hop(folder, args.rounds)
        if "search" in parts:
            text = (ROOT / "pipelines" / "search.yaml").read_text()
            ray_text = text.replace(
                "placement: {device: auto, instances: 1}",
                "placement: {backend: ray, resources: {num_cpus: 0.5}}",
            )
            assert ray_text != text
            ray_path = ROOT / "pipelines" / ".search_ray_bench.yaml"  # beside it: same paths
            ray_path.write_text(ray_text)
            try:
                query = {"query": np.array([b"how do I read a file line by line"], dtype=object)}
                paths = {"local": ROOT / "pipelines" / "search.yaml", "ray": ray_path}
                compare("pipelines/search.yaml, local threads against Ray actors", paths, query,
                        (1, 32), args.seconds, args.rounds)  # fmt: skip
            finally:
                ray_path.unlink()
        if "python" in parts:
            two = "{backend: %s, instances: 2%s}"
            paths = {
                "2 threads": _pipeline(folder, "words_local", WORDS, two % ("local", "")),
                "2 Ray actors": _pipeline(folder, "words_ray", WORDS, two % ("ray", ", resources: {num_cpus: 1}")),
            }  # fmt: skip
            text = {
                "text": np.array(
                    [b"the quick brown fox jumps over the lazy dog " * 20], dtype=object
                )
            }
            compare(
                "a Python-bound node, 2 instances", paths, text, (32,), args.seconds, args.rounds
            )


if __name__ == "__main__":
    main()
