"""torch's CPU weight-only int4/int8 kernels by activation dtype: time, and error against fp64.

    .venv/bin/python bench/quant_kernels.py [--threads 1] [--n 1536 --k 576]

Why the llm node feeds them bf16 even when its dtype is fp32 (nodes/llm/quant.py): per kernel
(`_weight_int4pack_mm_for_cpu`, group 32; `_weight_int8pack_mm`, per-channel scales) and batch
(1, 64) it times activations in bf16, fp16 and fp32 against a dense fp32 matmul of the same
shape (SmolLM2-135M's gate_up: [576] -> [1536]), one matrix called again and again, so it stays
in cache: this compares compute paths, not the memory traffic that decides a whole model's
batch-1 step (bench/llm_quant.py measures that). Then the int4 kernel's relative error
(Frobenius) against the exact product in fp64, with bf16 activations and scales as now, and
with each split into a bf16 high part and a bf16 remainder (x = hi + lo, one kernel call per
part): the kernel returns bf16, so its output rounding bounds what such splits can win.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

GROUP = 32


def micros(fn, budget: float = 0.5) -> float:
    """Mean time of calls for about `budget` seconds, in microseconds."""
    fn()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        fn()
        count += 1
    return elapsed / max(count, 1) * 1e6


def int4_setup(n: int, k: int):
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
    scale = (torch.rand(k // GROUP, n) * 0.02).half().float()  # GGUF Q4 scales are fp16
    weight = ((codes.float() - 8).view(n, k // GROUP, GROUP) * scale.t()[..., None]).view(n, k)
    return packed, scale, weight


def int4_mm(x, packed, scale, dtype):
    scale_zeros = torch.stack([scale, torch.zeros_like(scale)], -1).to(dtype)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(dtype), packed, GROUP, scale_zeros)


def timings(n: int, k: int) -> list[str]:
    packed, scale, weight = int4_setup(n, k)
    codes8 = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale8 = torch.rand(n) * 0.01
    rows = []
    for m in (1, 64):
        x = torch.randn(m, k)
        dense = micros(partial(torch.matmul, x, weight.t()))
        rows.append(f"| dense fp32 | {m} | fp32 | {dense:,.0f} | 1.00x |")
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            name = str(dtype).removeprefix("torch.")
            t4 = micros(partial(int4_mm, x, packed, scale, dtype))
            int8 = torch.ops.aten._weight_int8pack_mm
            t8 = micros(partial(int8, x.to(dtype), codes8, scale8.to(dtype)))
            rows.append(f"| int4 | {m} | {name} | {t4:,.0f} | {dense / t4:.2f}x |")
            rows.append(f"| int8 | {m} | {name} | {t8:,.0f} | {dense / t8:.2f}x |")
    return rows


def errors(n: int, k: int) -> list[str]:
    packed, scale, weight = int4_setup(n, k)
    x = torch.randn(64, k) + 0.3  # activations with a mean, as after RMSNorm
    exact = x.double() @ weight.double().t()
    bf16 = torch.bfloat16

    def split(t):
        hi = t.to(bf16).float()
        return hi, t - hi

    (xh, xl), (sh, sl) = split(x), split(scale)
    cases = {
        "bf16 activations and scales (nodes/llm/quant.py)": int4_mm(x, packed, scale, bf16),
        "activations hi + lo (2 calls)": int4_mm(xh, packed, scale, bf16)
        + int4_mm(xl, packed, scale, bf16),
        "scales hi + lo (2 calls)": int4_mm(x, packed, sh, bf16) + int4_mm(x, packed, sl, bf16),
        "both hi + lo (3 calls)": int4_mm(xh, packed, sh, bf16)
        + int4_mm(xl, packed, sh, bf16)
        + int4_mm(xh, packed, sl, bf16),
        "fp32 activations (scalar path)": int4_mm(x, packed, scale, torch.float32),
        "dense fp32 matmul": x @ weight.t(),
    }
    out = []
    for name, y in cases.items():
        err = float((y.double() - exact).norm() / exact.norm())
        out.append(f"| {name} | {err:.1e} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1536)
    ap.add_argument("--k", type=int, default=576)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# bench/quant_kernels.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
          f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s), [{args.k}] -> [{args.n}]\n")  # fmt: skip
    print("| kernel | batch | activations | µs per call (cache-hot) | speed vs dense fp32 |")
    print("|---|---|---|---|---|")
    print("\n".join(timings(args.n, args.k)))
    print("\n| int4 kernel, batch 64 | relative error vs fp64 |\n|---|---|")
    print("\n".join(errors(args.n, args.k)))


if __name__ == "__main__":
    main()
