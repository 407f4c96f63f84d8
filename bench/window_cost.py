"""What the live page's per-node window costs the request path: bench/noop.py's pipeline in one
process, alternating rounds with `RecentSamples.record` on and replaced by a no-op; CPU time per
node hop (process CPU / (requests x 4 hops)), median of the rounds, and each round's figure.

    .venv/bin/python bench/window_cost.py [--rounds 6] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import noop

from engine.samples import RecentSamples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    record = RecentSamples.record
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "noop_fns.py").write_text(noop.FUNCTION)
        for size in (32, 1):
            executor = noop.start(folder, size, 0.0)
            cpu: dict[str, list[float]] = {"on": [], "off": []}
            try:
                for _ in range(args.rounds):
                    for mode in ("on", "off"):
                        RecentSamples.record = record if mode == "on" else lambda *a: None
                        r = noop.measure(executor, args.concurrency, args.seconds)
                        cpu[mode].append(r["cpu_hop_us"])
            finally:
                RecentSamples.record = record
                executor.stop()
            on, off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
            print(
                f"max_batch_size {size}: CPU µs per hop with the window {on:.2f} "
                f"({', '.join(f'{x:.2f}' for x in cpu['on'])}), without {off:.2f} "
                f"({', '.join(f'{x:.2f}' for x in cpu['off'])}): {100 * (on / off - 1):+.1f} %"
            )


if __name__ == "__main__":
    main()
