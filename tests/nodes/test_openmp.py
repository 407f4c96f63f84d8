"""How OpenMP workers wait in pipectl processes, and loading in a thread that ends (nodes/openmp.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nodes.openmp import SPIN_ROUNDS, configure_openmp_waiting, in_passing_thread, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


def test_spin_is_set_when_the_user_chose_nothing():
    env: dict[str, str] = {}
    configure_openmp_waiting(env)
    assert env == {"GOMP_SPINCOUNT": str(SPIN_ROUNDS)}


@pytest.mark.parametrize("choice", [{"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_the_users_own_choice_wins(choice):
    env = dict(choice)
    configure_openmp_waiting(env)
    assert env == choice


def _python(code: str, **env: str) -> str:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **env}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_cli_sets_it_before_torch_is_imported():
    code = "import os, sys, engine.cli; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    assert _python(code) == f"{SPIN_ROUNDS} False"
    assert _python("import os, engine.cli; print(os.environ.get('GOMP_SPINCOUNT'))",
                   OMP_WAIT_POLICY="PASSIVE") == "None"  # fmt: skip


def test_result_and_exception_come_back_from_another_thread():
    caller = threading.get_ident()
    elsewhere = in_passing_thread(lambda a, b: (a + b, threading.get_ident() != caller), 2, 3)
    assert elsewhere == (5, True)

    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        in_passing_thread(fails)


# A parallel torch op on a thread gives it an OpenMP team (one more worker thread for 2 threads)
# that lives as long as that thread; run in a passing thread, it leaves no worker behind.
_TEAM_LEFT = """
import os, time, torch
from nodes.openmp import in_passing_thread
torch.set_num_threads(2)
x = torch.randn(2048, 2048)
def work():
    return float((x @ x).sum())
threads = lambda: len(os.listdir('/proc/self/task'))
before = threads()
in_passing_thread(work)
# the ended thread and its team's worker leave /proc a moment after join() returns
for _ in range(200):
    if threads() == before:
        break
    time.sleep(0.05)
passing = threads()
work()
print(passing - before, threads() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc")
def test_a_passing_thread_leaves_no_openmp_team_behind():
    passing, direct = map(int, _python(_TEAM_LEFT).split())
    assert passing == 0
    assert direct >= 1  # the same work on this thread left its team's worker running


@pytest.mark.parametrize("kind", ["encoder", "faiss_search", "llm"])
def test_more_threads_than_cpus_is_a_load_error_naming_threads(kind, tmp_path):
    """threads: 100000 started that many OpenMP threads: "can't start new thread", then a
    segfault at exit. Each kind with a threads param refuses it before reading its model."""
    from nodes.encoder import EncoderNode, EncoderParams
    from nodes.errors import InvalidConfig
    from nodes.faiss_search import FaissSearchNode, FaissSearchParams
    from nodes.llm.node import LLMNode, LLMParams

    too_many = usable_cpus() + 1
    node = {
        "encoder": lambda: EncoderNode(EncoderParams(threads=too_many), None),
        "faiss_search": lambda: FaissSearchNode(
            FaissSearchParams(index="none", threads=too_many), tmp_path
        ),
        "llm": lambda: LLMNode(LLMParams(threads=too_many), None),
    }[kind]()
    with pytest.raises(InvalidConfig, match=f"{too_many} threads are more than the") as caught:
        node.load("cpu")
    assert caught.value.field == "threads"
