"""backend: ray on a real two-node Ray cluster (tests/engine/backends/ray_cluster.py): nodes placed
on the Ray node their resources name, answers equal to the local backend's, a killed actor that
fails only its in-flight items and comes back, and an LLM streamed from an actor whose KV blocks
are freed when the request is cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine.compiler import compile_file, compile_spec
from engine.errors import Unavailable
from engine.executor import Executor
from engine.spec import parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[3]
QUERIES = ["how do I read a file line by line", "sort a list of tuples", "parse a date string"]


def _query(text: str) -> dict:
    return {"query": np.array([text.encode()], dtype=object)}


def _ray_node_with(resource: str) -> str:
    import ray

    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]]
    return node


def _wait(predicate, timeout_s: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s}s: {what}")
        time.sleep(0.1)


def test_nodes_run_on_the_ray_node_their_resources_name(ray_cluster):
    plan = compile_file(DATA / "search_zones.yaml")
    with Executor(plan) as ex:
        remote = [ex.submit_sync(_query(q)) for q in QUERIES]
        placement = {n: ex.statistics()[n]["placement"] for n in ("encode", "search")}
    (encode,), (search,) = placement["encode"], placement["search"]
    assert encode["backend"] == search["backend"] == "ray"
    assert encode["node_id"] == _ray_node_with("zone_a")
    assert search["node_id"] == _ray_node_with("zone_b")
    assert encode["node_id"] != search["node_id"]
    assert encode["pid"] != os.getpid() and search["pid"] != os.getpid()

    local_plan = compile_spec(parse_spec(_on_local_backend(plan.file), "local.yaml", str(DATA)))
    assert all(not n.backend.is_ray for n in local_plan.nodes.values())
    with Executor(local_plan) as ex:
        local = [ex.submit_sync(_query(q)) for q in QUERIES]
    for r, l in zip(remote, local, strict=True):
        assert r.outputs["ids"].tolist() == l.outputs["ids"].tolist()
        assert r.outputs["keys"].tolist() == l.outputs["keys"].tolist()
        np.testing.assert_allclose(r.outputs["scores"], l.outputs["scores"], rtol=1e-5, atol=1e-6)


def _on_local_backend(path: str) -> str:
    """The same pipeline with every placement removed: local threads."""
    data = yaml.safe_load(Path(path).read_text())
    data["defaults"].pop("placement")
    for node in data["nodes"].values():
        node.pop("placement")
    return yaml.safe_dump(data)


async def _load(ex: Executor, values: range) -> list:
    async def one(v: int):
        try:
            return await ex.submit({"x": np.array([v], dtype=np.int64)})
        except Unavailable as exc:
            return exc

    return await asyncio.gather(*(one(v) for v in values))


def test_a_killed_actor_fails_only_its_in_flight_items_and_comes_back(ray_cluster):
    plan = compile_file(DATA / "slow_double.yaml")
    with Executor(plan) as ex:
        loop = ex.loop()
        victim = ex.statistics()["double"]["placement"][0]
        load = asyncio.run_coroutine_threadsafe(_load(ex, range(200)), loop)
        _wait(lambda: ex.statistics()["double"]["success"] >= 20, what="20 items served")
        os.kill(victim["pid"], signal.SIGKILL)
        results = load.result(timeout=300)

        failed = [r for r in results if isinstance(r, Exception)]
        served = [(v, r) for v, r in zip(range(200), results, strict=True) if r not in failed]
        assert 1 <= len(failed) <= 4  # one batch (max_batch_size 4) was in the killed actor
        for error in failed:
            assert isinstance(error, Unavailable)
            assert "node 'double'" in str(error) and "died" in str(error)
        assert all(r.outputs["y"].tolist() == [2 * v] for v, r in served)

        def restarted():
            stats = ex.statistics()["double"]
            return stats["restarts"] == 1 and stats["instances_up"] == 2

        _wait(restarted, what="the killed actor restarted")
        back = ex.statistics()["double"]["placement"][0]
        assert back["pid"] != victim["pid"] and back["ready"]
        later = asyncio.run_coroutine_threadsafe(_load(ex, range(1000, 1040)), loop).result(300)
        assert [r.outputs["y"].tolist() for r in later] == [[2 * v] for v in range(1000, 1040)]


LLM = """\
apiVersion: pipectl/v1
name: chat
inputs:
  prompt: {dtype: BYTES, shape: [1]}
outputs: {text: generate.text}
nodes:
  generate:
    kind: llm
    params: {dtype: fp32, kv_cache_bytes: 33554432, max_tokens: 400, ignore_eos: true}
    inputs: {prompt: $inputs.prompt}
    placement: {backend: ray, resources: {num_cpus: 1}}
"""


def test_an_llm_streams_from_its_actor_and_cancelling_frees_its_kv_blocks(ray_cluster):
    plan = compile_spec(parse_spec(LLM, "chat.yaml", str(ROOT)))
    with Executor(plan) as ex:

        def kv_used() -> float:
            return ex.statistics()["generate"]["llm"]["kv_blocks_used"]

        async def stream_then_leave() -> tuple[list[bytes], float]:
            deltas: list[bytes] = []
            prompt = {"prompt": np.array([b"Write a long story about a lighthouse."], dtype=object)}
            async for event in ex.stream(prompt):
                deltas.append(event.outputs["text"].reshape(-1)[0])
                if len(deltas) == 5:
                    used = await asyncio.to_thread(kv_used)
                    break  # leaving the stream cancels the request
            return deltas, used

        deltas, used_while_streaming = asyncio.run_coroutine_threadsafe(
            stream_then_leave(), ex.loop()
        ).result(timeout=300)
        assert len(deltas) == 5 and all(isinstance(d, bytes) for d in deltas)
        assert used_while_streaming > 0
        (actor,) = ex.statistics()["generate"]["placement"]
        assert actor["backend"] == "ray" and actor["pid"] != os.getpid()
        _wait(lambda: kv_used() == 0, timeout_s=60, what="KV blocks freed in the actor")
        assert ex.statistics()["generate"]["llm"]["running"] == 0
