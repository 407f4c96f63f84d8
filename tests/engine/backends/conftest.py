"""One real two-node Ray cluster (tests/engine/backends/ray_cluster.py) shared by the backend
tests of a session, and this test process connected to it as a driver."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ray")

from tests.engine.backends.ray_cluster import ENV, start_cluster, wait_for_nodes


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """The cluster, with this process joined to it (ray.init); stopped by PID at the end."""
    import ray

    log = tmp_path_factory.mktemp("ray") / "ray-start.log"
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    cluster = start_cluster(log)
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        wait_for_nodes(2)
        addresses = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        assert addresses == {"127.0.0.1"}, f"the test cluster left loopback: {addresses}"
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
