"""A real two-node Ray cluster on this machine for the backend tests: a head and a second raylet,
each with one CPU and its own custom resource (zone_a, zone_b), started with the `ray start`
commands the README gives. `stop()` ends every process of this cluster by PID (SIGKILL, like
`ray stop --force`, but only this cluster's processes: others' Ray clusters are left alone)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# `ray` itself, with the node address kept on 127.0.0.1 (see ray_start_loopback.py)
RAY = [sys.executable, "-m", "tests.engine.backends.ray_start_loopback"]
ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120
# local test cluster: no token files shared with other clusters on the machine, no usage stats
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@dataclass
class RayCluster:
    address: str  # host:port of the head's GCS
    temp_dir: str
    log: Path

    def env(self) -> dict[str, str]:
        """The environment for a process that joins this cluster (`RAY_ADDRESS`)."""
        return dict(os.environ, **ENV, RAY_ADDRESS=self.address)

    def stop(self) -> None:
        pids = _cluster_pids(self.temp_dir)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:  # reap the ones that are our children
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(log: Path) -> RayCluster:
    """Start the head (zone_a) and the second raylet (zone_b); return once both are up."""
    temp_dir = tempfile.mkdtemp(prefix="pipectl-ray-", dir="/tmp")  # short: socket path limit
    port = _free_port()
    while 10002 <= port <= 19999:  # Ray keeps that range for its workers
        port = _free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir, log)
    # `ray start` of a second node refuses to run with the single-node switch that keeps drivers
    # on loopback; the loopback entry point keeps these nodes there instead
    env = dict(os.environ, **ENV, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    # a small object store each: CI containers often have a small /dev/shm
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats",
              "--object-store-memory", str(256 << 20)]  # fmt: skip
    head = [*RAY, "start", "--head", "--port", str(port), "--temp-dir", temp_dir,
            "--include-dashboard=false", "--ray-client-server-port", str(_free_port()),
            "--dashboard-agent-listen-port", str(_free_port()),
            "--resources", '{"zone_a": 1}', *common]  # fmt: skip
    second = [*RAY, "start", "--address", cluster.address, "--resources", '{"zone_b": 1}',
              "--dashboard-agent-listen-port", str(_free_port()), *common]  # fmt: skip
    try:
        with log.open("ab") as out:
            for cmd in (head, second):
                subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                               timeout=START_TIMEOUT_S, check=True)  # fmt: skip
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _cluster_pids(temp_dir: str) -> list[int]:
    """Every process whose command line names `temp_dir` (GCS, raylets, agents), and all of their
    descendants (workers and actors)."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if temp_dir.encode() in cmdline:
            roots.add(pid)
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found and pid != os.getpid():
                found.add(pid)
                changed = True
    return sorted(found)


def wait_for_nodes(count: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait (in a connected driver) until `count` Ray nodes are alive."""
    import ray

    deadline = time.monotonic() + timeout_s
    while len([n for n in ray.nodes() if n.get("Alive")]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} Ray nodes after {timeout_s}s")
        time.sleep(0.2)
