"""What a model repository refuses, and how it says so, with stock tritonclient and HTTP against a
real `pipectl serve --model-repository` (Triton's model-control semantics): two files claiming
one model version, a node whose params name a missing function, a removed version folder, a
pipeline's node model unloaded alone, another repository's name, a version beyond int64;
statistics of every loaded version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import requests

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server
from tests.server.test_model_control import infer, scale_file, write

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException


def _folder_version(factor: float, policy: str = "") -> str:
    return scale_file(factor, policy).replace('"fns.py:scale"', '"../../fns.py:scale"')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repository_errors")
    repo = root / "models"
    repo.mkdir()
    shutil.copy(DATA / "fns.py", repo / "fns.py")
    write(repo / "scale.yaml", scale_file(2))
    write(repo / "multi" / "1" / "pipeline.yaml", _folder_version(10))
    write(
        repo / "multi" / "2" / "pipeline.yaml", _folder_version(20, "version_policy: {policy: all}")
    )
    srv = start_server(
        [], "--model-repository", str(repo), "--model-control-mode", "explicit",
        "--load-model", "scale", "--load-model", "multi", "--api-key", API_KEY,
        log=root / "serve.log",
    )  # fmt: skip
    srv.repo = repo
    yield srv
    stop_server(srv)


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def http_load(server, name: str, action: str = "load") -> requests.Response:
    url = f"http://{server.http_url}/v2/repository/models/{name}/{action}"
    return requests.post(url, json={}, headers=AUTH, timeout=120)


def index(client) -> dict[tuple[str, str], dict]:
    models = client.get_model_repository_index(headers=AUTH, as_json=True).get("models", [])
    return {(m["name"], m.get("version", "")): m for m in models}


def test_two_files_with_one_name_and_version_are_refused_naming_both(client, server):
    twin = server.repo / "zcopy.yaml"  # someone's copy to experiment with, same `name: scale`
    write(twin, scale_file(10))
    try:
        r = http_load(server, "scale")
        assert r.status_code == 400, r.text
        assert "scale.yaml" in r.text and "zcopy.yaml" in r.text, r.text
        entry = index(client)[("scale", "1")]
        assert entry["state"] == "UNAVAILABLE" and "zcopy.yaml" in entry["reason"], entry
        np.testing.assert_array_equal(infer(client), [2, 2, 2, 2])  # the loaded file serves on
    finally:
        twin.unlink()
    client.load_model("scale", headers=AUTH)  # one file again: loads
    assert index(client)[("scale", "1")]["state"] == "READY"


def test_the_index_lists_unloaded_models_and_a_claimed_twice_version_before_any_load(
    client, server
):
    for file in ("pair_a.yaml", "pair_b.yaml"):
        write(server.repo / file, scale_file(2).replace("name: scale", "name: pair"))
    write(server.repo / "lonely.yaml", scale_file(3).replace("name: scale", "name: lonely"))
    try:
        entries = index(client)
        assert ("lonely", "") in entries  # in the folder, never loaded: its name only (Triton)
        pair = entries[("pair", "1")]
        assert pair["state"] == "UNAVAILABLE", pair
        assert "pair_a.yaml" in pair["reason"] and "pair_b.yaml" in pair["reason"], pair
    finally:
        for file in ("pair_a.yaml", "pair_b.yaml", "lonely.yaml"):
            (server.repo / file).unlink()


def test_a_missing_function_is_a_400_naming_the_file_node_and_field(client, server):
    broken = server.repo / "broken.yaml"
    write(broken, scale_file(2).replace("name: scale", "name: broken").replace(
        "fns.py:scale", "fns.py:nonexistent"))  # fmt: skip
    r = http_load(server, "broken")
    assert r.status_code == 400, r.text
    for part in ("broken.yaml", "node 'scale'", "params.function", "nonexistent"):
        assert part in r.text, r.text
    with pytest.raises(InferenceServerException) as info:
        client.load_model("broken", headers=AUTH)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value
    assert "broken.yaml" in info.value.message()


def test_a_removed_version_leaves_the_index_after_a_good_load(client, server):
    bad = server.repo / "multi" / "3" / "pipeline.yaml"
    write(bad, _folder_version(30, "version_policy: {policy: all}").replace(":scale", ":nope"))
    with pytest.raises(InferenceServerException):
        client.load_model("multi", headers=AUTH)
    assert index(client)[("multi", "3")]["state"] == "UNAVAILABLE"
    shutil.rmtree(bad.parent)
    client.load_model("multi", headers=AUTH)
    entries = index(client)
    assert ("multi", "3") not in entries, entries[("multi", "3")]
    assert entries[("multi", "1")]["state"] == entries[("multi", "2")]["state"] == "READY"


def test_statistics_without_a_version_cover_every_loaded_version(client):
    infer(client, "multi", "1")
    stats = client.get_inference_statistics("multi", headers=AUTH, as_json=True)["model_stats"]
    assert sorted(s["version"] for s in stats) == ["1", "2"]
    everything = client.get_inference_statistics("", headers=AUTH, as_json=True)["model_stats"]
    assert {("multi", "1"), ("multi", "2"), ("multi.scale", "1")} <= {
        (s["name"], s["version"]) for s in everything
    }


def test_a_node_model_unloads_only_with_its_pipeline(client, server):
    r = http_load(server, "multi.scale", "unload")
    assert r.status_code == 400, r.text
    assert "node 'scale' of pipeline 'multi'" in r.text, r.text
    assert client.is_model_ready("multi.scale", headers=AUTH)


@pytest.mark.parametrize("call", ["Load", "Unload", "Index"])
def test_another_repository_name_is_refused_by_name(client, call):
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    fields = {"repository_name": "other"} | ({} if call == "Index" else {"model_name": "scale"})
    rpc = "RepositoryIndex" if call == "Index" else f"RepositoryModel{call}"
    request = getattr(pb, f"{rpc}Request")(**fields)
    with pytest.raises(grpc.RpcError) as info:
        getattr(client._client_stub, rpc)(request, metadata=list(AUTH.items()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'other'" in info.value.details(), info.value.details()
    assert client.is_model_ready("scale", headers=AUTH)  # nothing was unloaded


def test_the_repository_own_name_is_honoured(client, server):
    from tritonclient.grpc import service_pb2 as pb

    request = pb.RepositoryModelLoadRequest(repository_name=server.repo.name, model_name="scale")
    client._client_stub.RepositoryModelLoad(request, metadata=list(AUTH.items()))
    assert client.is_model_ready("scale", headers=AUTH)


def test_a_version_beyond_int64_is_refused(client, server):
    write(server.repo / "huge.yaml", scale_file(2, "version: 99999999999999999999").replace(
        "name: scale", "name: huge"))  # fmt: skip
    r = http_load(server, "huge")
    assert r.status_code == 400, r.text
    assert "huge.yaml" in r.text and "version" in r.text, r.text


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_model_len", "9000", "9000"),
        ("kv_cache_bytes", "65536", "holds no block of KV"),
        ("threads", "100000", "100000 threads are more than the"),
    ],
)
def test_an_llm_param_the_model_cannot_take_is_a_400_naming_the_file(server, field, value, words):
    name = f"llm_{field}"
    text = (DATA / "llm.yaml").read_text().replace("name: chat", f"name: {name}")
    old = {"max_model_len": "max_model_len: 512", "kv_cache_bytes": "kv_cache_bytes: 67108864",
           "threads": "max_tokens: 16"}  # fmt: skip
    new = f"{field}: {value}" if field != "threads" else f"max_tokens: 16, threads: {value}"
    text = text.replace(old[field], new)
    write(server.repo / f"{name}.yaml", text)
    r = http_load(server, name)
    assert r.status_code == 400, r.text
    for part in (f"{name}.yaml", "node 'generate'", f"params.{field}", words):
        assert part in r.text, r.text


def test_a_version_folder_beyond_int64_is_refused_and_the_others_serve(client, server):
    huge = server.repo / "multi" / "99999999999999999999" / "pipeline.yaml"
    write(huge, _folder_version(30, "version_policy: {policy: all}"))
    try:
        r = http_load(server, "multi")
        assert r.status_code == 400, r.text
        assert "99999999999999999999" in r.text and "int64" in r.text, r.text
        np.testing.assert_array_equal(infer(client, "multi", "2"), [20, 20, 20, 20])
    finally:
        shutil.rmtree(huge.parent)
    client.load_model("multi", headers=AUTH)
