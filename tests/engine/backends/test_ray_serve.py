"""`pipectl serve --ray-address` on the two-node Ray cluster: a pipeline file with backend: ray is
served to tritonclient, answers as the local backend does, and an actor killed under it turns its
node not ready, is restarted by Ray, is counted in /metrics, and serves again. `pipectl plan
--ray-address` checks the resources against the cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from engine.compiler import compile_spec
from engine.executor import Executor
from engine.spec import parse_spec
from tests.engine.backends.test_ray_backend import QUERIES, _on_local_backend
from tests.server.conftest import start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE = Path(__file__).parent / "data" / "search_zones.yaml"
ROOT = Path(__file__).resolve().parents[3]


def _infer(client, text: str) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient

    query = grpcclient.InferInput("query", [1, 1], "BYTES")
    query.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    result = client.infer("search_zones", [query])
    return {name: result.as_numpy(name)[0] for name in ("ids", "scores")}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _metric(text: str, name: str, node: str) -> float:
    pattern = rf'^{name}(?:_total)?{{node="{node}",pipeline="search_zones"}} (\S+)$'
    (value,) = re.findall(pattern, text, re.MULTILINE)
    return float(value)


def _assert_live_page_names_the_ray_nodes(base: str) -> None:
    import ray

    (pipeline,) = json.loads(_get(f"{base}/v2/stats/live")[1])["pipelines"]
    instances = {n["name"]: n["instances"] for n in pipeline["nodes"]}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    (encode,), (search,) = instances["encode"], instances["search"]
    assert encode["backend"] == search["backend"] == "ray"
    assert {encode["node_id"], search["node_id"]} <= alive
    assert encode["node_id"] != search["node_id"]  # zone_a and zone_b


def _actor_pid(node: str) -> int:
    import ray

    (entry,) = [
        a for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"pipectl.{node}.0.")
    ]  # fmt: skip
    actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
    return ray.get(actor.info.remote())["pid"]


def test_serve_a_ray_pipeline_to_tritonclient(ray_cluster, tmp_path):
    import tritonclient.grpc as grpcclient

    plan = compile_spec(
        parse_spec(_on_local_backend(str(PIPELINE)), "local.yaml", str(PIPELINE.parent))
    )
    with Executor(plan) as ex:
        local = [ex.submit_sync({"query": np.array([q.encode()], dtype=object)}) for q in QUERIES]

    srv = start_server(
        [str(PIPELINE)], "--ray-address", ray_cluster.address, log=tmp_path / "serve.log"
    )
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    base = f"http://{srv.http_url}"
    try:
        for q, want in zip(QUERIES, local, strict=True):
            got = _infer(client, q)
            assert got["ids"].tolist() == want.outputs["ids"].tolist()
            np.testing.assert_allclose(got["scores"], want.outputs["scores"], rtol=1e-5, atol=1e-6)
        metrics = _get(f"{base}/metrics")[1]
        assert _metric(metrics, "pipectl_node_instances_up", "encode") == 1
        assert _metric(metrics, "pipectl_node_instance_restarts", "encode") == 0
        _assert_live_page_names_the_ray_nodes(base)

        os.kill(_actor_pid("encode"), signal.SIGKILL)
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while not (503 in seen and seen[-1] == 200):
            assert time.monotonic() < deadline, f"readiness never went 503 then 200: {seen[-5:]}"
            seen.append(_get(f"{base}/v2/models/search_zones.encode/ready")[0])
            time.sleep(0.05)
        assert _get(f"{base}/v2/models/search_zones.search/ready")[0] == 200  # only encode
        metrics = _get(f"{base}/metrics")[1]
        assert _metric(metrics, "pipectl_node_instance_restarts", "encode") == 1
        assert _metric(metrics, "pipectl_node_instances_up", "encode") == 1
        got = _infer(client, QUERIES[0])
        assert got["ids"].tolist() == local[0].outputs["ids"].tolist()
    finally:
        client.close()
        assert stop_server(srv) == 0, srv.log_text()


def test_plan_checks_ray_resources_against_the_cluster(ray_cluster, tmp_path):
    def plan(path: Path) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable,
            "-m",
            "engine.cli",
            "plan",
            str(path),
            "--ray-address",
            ray_cluster.address,
        ]
        return subprocess.run(
            cmd,
            check=False,
            cwd=ROOT,
            env=ray_cluster.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    fits = plan(PIPELINE)
    assert fits.returncode == 0, fits.stderr
    assert "ray CPU=0.5 zone_a=1 max_restarts=3" in fits.stdout
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(PIPELINE.read_text().replace("zone_b", "zone_c"))
    refused = plan(elsewhere)
    assert refused.returncode == 1
    assert "node 'search' (backend ray) asks for {CPU 0.5, zone_c 1} per instance" in refused.stderr
    assert "no Ray node has that much zone_c" in refused.stderr
