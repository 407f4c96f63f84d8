"""How idle OpenMP worker threads wait, set for every pipectl process before torch or faiss loads.

An OpenMP worker that finishes a parallel region spins for a while, then sleeps until the next.
libgomp's default spin (GOMP_SPINCOUNT 300,000 rounds, ~4.5 ms on the 2-core Xeon of
BENCHMARKS.md) steals the cores that other workers need when several share few cores: the encoder
at batch 1 took 125 CPU ms per embedding spinning, 13 ms with no spin. No spin at all
(OMP_WAIT_POLICY=PASSIVE, pipectl's setting before) puts the workers to sleep between the ~0.1 ms
products of an LLM decode step at batch 1, each region then waiting for a futex wake: two threads
ran the step 1.6x slower than spinning and served 24.7 tokens/s against 34.0
(bench/openmp_wait.py). 10,000 rounds (~0.2 ms) bridge the gaps inside a forward pass and cost
~0.2 CPU ms per idle gap. libgomp cuts the spin to 100 rounds on its own while it runs more
threads than there are cores (GNU libgomp, env.c: gomp_throttled_spin_count_var).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, MutableMapping
from typing import TypeVar

SPIN_ROUNDS = 10_000
T = TypeVar("T")


def configure_openmp_waiting(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set GOMP_SPINCOUNT to SPIN_ROUNDS unless the user chose OMP_WAIT_POLICY or GOMP_SPINCOUNT.

    Only takes effect before libgomp is loaded (it reads its environment once, at load)."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = str(SPIN_ROUNDS)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset or
    `taskset`; os.cpu_count() where the platform has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_thread_count(threads: int) -> str | None:
    """Why `threads` intra-op threads cannot run here (None if they can): more threads than
    usable CPUs only contend for them, and libgomp cannot start an absurd count at all (100,000
    failed with "can't start new thread", then crashed the process at exit)."""
    cpus = usable_cpus()
    if threads > cpus:
        why = f"{threads} threads are more than the {cpus} CPUs this process can run on"
        return f"{why} (at most {cpus})"
    return None


def refuse_thread_count(threads: int | None) -> None:
    """Raise nodes.errors.InvalidConfig naming the `threads` param when `check_thread_count`
    finds it cannot run here (a node's load; None or 0: torch's default, always fine)."""
    from nodes.errors import InvalidConfig

    if threads and (problem := check_thread_count(threads)):
        raise InvalidConfig(problem, field="threads")


def in_passing_thread(fn: Callable[..., T], *args) -> T:
    """fn(*args) in a thread that ends with it; its result, or its exception raised here.

    libgomp keeps a team of workers for every thread that ran a parallel region, until that
    thread ends, and spins far less while its teams hold more threads than there are cores. A
    model loaded with two threads on the caller's thread left such a team beside the LLM engine's
    step thread: the step's products then ran 1.6x slower (bench/openmp_wait.py). Loading in a
    thread that ends leaves no team behind."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=run, name="pipectl-omp-passing", daemon=True)
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value
