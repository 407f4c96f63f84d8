"""Model control over a model repository (`--model-repository`), with stock tritonclient against
a real server: explicit load/reload/unload over gRPC and HTTP, versions, a reload under load with
no failed request, a bad reload that keeps the old version, unload while streaming, poll mode."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException

SCALE = """apiVersion: pipectl/v1
name: scale
{extra}
inputs:
  x: {{dtype: FP32, shape: [4]}}
outputs:
  y: scale.y
defaults:
  placement: {{device: cpu, instances: 1}}
nodes:
  scale:
    kind: python
    params: {{function: "fns.py:scale", kwargs: {{factor: {factor}}},
              inputs: {{x: {{dtype: FP32, shape: [4]}}}}, outputs: {{y: {{dtype: FP32, shape: [4]}}}}}}
    inputs: {{x: $inputs.x}}
"""
WORDS = (DATA / "words.yaml").read_text().replace("delay_s: 0.01", "delay_s: 0.05")
WAIT_S = 120  # bound on waiting for the poller (never asserted as a time)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a poll never reads half a file


def scale_file(factor: float, extra: str = "") -> str:
    return SCALE.format(factor=factor, extra=extra)


def repository(root: Path) -> Path:
    repo = root / "models"
    repo.mkdir()
    shutil.copy(DATA / "fns.py", repo / "fns.py")
    write(repo / "scale.yaml", scale_file(2))
    write(repo / "words.yaml", WORDS)
    for version, factor in ((1, 10), (2, 20)):
        folder = repo / "multi" / str(version)
        shutil.copy(DATA / "fns.py", folder.parent.parent / "fns.py")
        policy = "version_policy: {policy: all}" if version == 2 else ""
        text = scale_file(factor, policy).replace('"fns.py:scale"', '"../../fns.py:scale"')
        write(folder / "pipeline.yaml", text)
    return repo


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_control")
    repo = repository(root)
    srv = start_server(
        [], "--model-repository", str(repo), "--model-control-mode", "explicit",
        "--load-model", "scale", "--load-model", "words", "--api-key", API_KEY,
        log=root / "serve.log", module="tests.server.stream_kind",
    )  # fmt: skip
    srv.repo = repo
    yield srv
    stop_server(srv)


@pytest.fixture
def client(explicit):
    c = grpcclient.InferenceServerClient(explicit.grpc_url)
    yield c
    c.close()


def infer(client, model="scale", version="", value=1.0) -> np.ndarray:
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.full((1, 4), value, dtype=np.float32))
    return client.infer(model, [x], model_version=version, headers=AUTH).as_numpy("y")[0]


def served(client, model: str) -> bool:
    try:
        return client.is_model_ready(model, headers=AUTH)
    except InferenceServerException:  # NOT_FOUND once unloaded
        return False


def index(client) -> dict[tuple[str, str], dict]:
    models = client.get_model_repository_index(headers=AUTH, as_json=True).get("models", [])
    return {(m["name"], m.get("version", "")): m for m in models}


def ready_index(server) -> dict[tuple[str, str], dict]:
    """POST /v2/repository/index {"ready": true}: the models that take requests."""
    import requests

    url = f"http://{server.http_url}/v2/repository/index"
    r = requests.post(url, json={"ready": True}, headers=AUTH, timeout=60)
    r.raise_for_status()
    return {(m["name"], m.get("version", "")): m for m in r.json()}


def test_index_lists_loaded_and_the_load_model_names(client):
    entries = index(client)
    assert entries[("scale", "1")]["state"] == "READY"
    assert entries[("scale.scale", "1")]["state"] == "READY"
    assert ("multi", "1") not in entries  # explicit: only --load-model names at start
    assert infer(client)[0] == 2.0


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", b'{"parameters": 5}', b'{"parameters": [1]}']
)
@pytest.mark.parametrize("action", ["load", "unload"])
def test_a_control_body_that_is_no_object_is_400(client, explicit, action, body):
    """{"parameters": 5} was a TypeError answered 500."""
    import requests

    url = f"http://{explicit.http_url}/v2/repository/models/nothing/{action}"
    r = requests.post(url, data=body, headers=AUTH, timeout=60)
    assert r.status_code == 400, r.text
    assert "not valid JSON" in r.text or '{\\"parameters\\": {...}}' in r.text
    assert infer(client)[0] == 2.0


def test_reload_under_load_fails_no_request(client, explicit):
    failures, results, stop = [], [], threading.Event()

    def hammer():
        c = grpcclient.InferenceServerClient(explicit.grpc_url)
        while not stop.is_set():
            try:
                results.append(float(infer(c)[0]))
            except InferenceServerException as exc:
                failures.append(str(exc))
        c.close()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for factor in (3, 4, 5):
            write(explicit.repo / "scale.yaml", scale_file(factor))
            client.load_model("scale", headers=AUTH)
            assert infer(client)[0] == factor  # the switch is done when load returns
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and len(results) > 0
    assert set(results) <= {2.0, 3.0, 4.0, 5.0}


def test_bad_reload_keeps_the_old_version(client, explicit):
    write(explicit.repo / "scale.yaml", scale_file(6))
    client.load_model("scale", headers=AUTH)
    write(explicit.repo / "scale.yaml", scale_file(7).replace("kind: python", "kind: pythn"))
    with pytest.raises(InferenceServerException, match="pythn") as caught:
        client.load_model("scale", headers=AUTH)
    assert "INVALID_ARG" in str(caught.value.status())
    # the file named once, with the line of the unknown kind (it was named twice)
    assert str(caught.value).count("scale.yaml") == 1, str(caught.value)
    assert re.search(r"models/scale\.yaml: line 1[0-9]: E-", str(caught.value)), str(caught.value)
    assert infer(client)[0] == 6.0  # the previous load serves on
    for name in ("scale", "scale.scale"):  # the index: the latest load of version 1 failed
        entry = index(client)[(name, "1")]
        assert entry["state"] == "UNAVAILABLE", entry
        assert "reload failed, the previous load serves" in entry["reason"]
        assert "pythn" in entry["reason"]
        assert client.is_model_ready(name, "1", headers=AUTH)  # ModelReady: it still serves
    ready = ready_index(explicit)  # Triton's ready filter: what takes requests
    assert ready[("scale", "1")]["state"] == "READY" and "pythn" in ready[("scale", "1")]["reason"]
    write(explicit.repo / "scale.yaml", scale_file(2))  # fixed: the next load clears the reason
    client.load_model("scale", headers=AUTH)
    assert "reason" not in index(client)[("scale", "1")] and infer(client)[0] == 2.0
    assert index(client)[("scale", "1")]["state"] == "READY"


def test_versions_policy_selection_and_metadata(client):
    client.load_model("multi", headers=AUTH)  # version_policy all: both folders
    assert client.get_model_metadata("multi", headers=AUTH, as_json=True)["versions"] == ["1", "2"]
    assert infer(client, "multi", "1")[0] == 10.0 and infer(client, "multi", "2")[0] == 20.0
    assert infer(client, "multi")[0] == 20.0  # no version: the latest
    with pytest.raises(InferenceServerException, match=r"version '3' is not served"):
        infer(client, "multi", "3")
    assert {v for (n, v), e in index(client).items() if n == "multi"} == {"1", "2"}


def test_http_load_unload_and_refusals(explicit):
    http = httpclient.InferenceServerClient(explicit.http_url)
    try:
        http.unload_model("multi", headers=AUTH)
        with pytest.raises(InferenceServerException, match="not served"):
            http.get_model_metadata("multi", headers=AUTH)
        states = {(m["name"], m["version"]): m for m in http.get_model_repository_index(AUTH)}
        assert states[("multi", "2")]["state"] == "UNAVAILABLE"
        assert states[("multi", "2")]["reason"].startswith("unloaded")
        http.load_model("multi", headers=AUTH)
        assert http.is_model_ready("multi", "1", headers=AUTH)
        with pytest.raises(InferenceServerException, match="no model 'nope'"):
            http.load_model("nope", headers=AUTH)
        with pytest.raises(InferenceServerException, match="'config' is not supported"):
            http.load_model("multi", headers=AUTH, config='{"max_batch_size": 4}')
    finally:
        http.close()


@pytest.mark.parametrize("value", ['"yes"', "1", "null", "[true]"])
def test_unload_dependents_must_be_a_boolean_over_http(explicit, client, value):
    import requests

    url = f"http://{explicit.http_url}/v2/repository/models/scale/unload"
    body = '{"parameters": {"unload_dependents": ' + value + "}}"
    r = requests.post(url, data=body, headers=AUTH, timeout=60)
    assert r.status_code == 400 and "'unload_dependents' must be a boolean" in r.text, r.text
    assert infer(client)[0] == 2.0  # not unloaded


def test_unload_dependents_must_be_a_boolean_over_grpc(explicit, client):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.RepositoryModelUnloadRequest(model_name="scale")
    request.parameters["unload_dependents"].int64_param = 1  # tritonclient sends a bool_param
    with grpc.insecure_channel(explicit.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelUnload(request, metadata=tuple(AUTH.items()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'unload_dependents' must be a boolean, got 1 (int)" in caught.value.details()
    assert infer(client)[0] == 2.0
    with pytest.raises(InferenceServerException, match="load parameter 'unload_dependents'"):
        request = service_pb2.RepositoryModelLoadRequest(model_name="scale")
        request.parameters["unload_dependents"].bool_param = True
        with grpc.insecure_channel(explicit.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            try:
                stub.RepositoryModelLoad(request, metadata=tuple(AUTH.items()))
            except grpc.RpcError as exc:
                raise InferenceServerException(exc.details()) from None
    client.unload_model("scale", headers=AUTH, unload_dependents=True)  # a boolean: honoured
    assert not served(client, "scale")
    client.load_model("scale", headers=AUTH)
    assert infer(client)[0] == 2.0


def test_unload_while_streaming_finishes_the_stream(client, explicit):
    words = " ".join(f"w{i}" for i in range(40))  # 41 deltas, 0.05 s apart
    responses, done = [], threading.Event()

    def callback(result, error):
        responses.append(error or result)
        if (
            error is not None
            or result.get_response().parameters["triton_final_response"].bool_param
        ):
            done.set()

    stream = grpcclient.InferenceServerClient(explicit.grpc_url)
    prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[words.encode()]], dtype=object))
    limit = grpcclient.InferInput("max_tokens", [1, 1], "INT32")
    limit.set_data_from_numpy(np.array([[64]], dtype=np.int32))
    stream.start_stream(callback, headers=AUTH)
    stream.async_stream_infer("words", [prompt, limit], enable_empty_final_response=True)
    deadline = time.monotonic() + WAIT_S
    while len(responses) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.unload_model("words", headers=AUTH)  # mid-stream
    with pytest.raises(InferenceServerException, match="not served"):
        client.get_model_metadata("words", headers=AUTH)  # new requests: gone
    assert done.wait(WAIT_S)
    stream.stop_stream()
    stream.close()
    errors = [r for r in responses if isinstance(r, InferenceServerException)]
    text = b"".join(
        r.as_numpy("text").reshape(-1)[0] for r in responses if not isinstance(r, Exception)
    )
    assert errors == [] and text.decode() == "echo: " + words
    client.load_model("words", headers=AUTH)


def test_none_mode_refuses_load_requests(tmp_path):
    repo = repository(tmp_path)
    srv = start_server(
        [], "--model-repository", str(repo), "--api-key", API_KEY,
        log=tmp_path / "serve.log", module="tests.server.stream_kind",
    )  # fmt: skip
    try:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        assert infer(c, "multi", "2")[0] == 20.0 and infer(c)[0] == 2.0  # all loaded at start
        with pytest.raises(InferenceServerException, match="control mode is 'none'"):
            c.load_model("scale", headers=AUTH)
        c.close()
    finally:
        stop_server(srv)


def poll_server(repo: Path, tmp_path: Path):
    """A server of `repo` in poll mode, polling every 0.2 s."""
    return start_server(
        [], "--model-repository", str(repo), "--model-control-mode", "poll",
        "--repository-poll-secs", "0.2", "--api-key", API_KEY,
        log=tmp_path / "serve.log", module="tests.server.stream_kind",
    )  # fmt: skip


def test_poll_mode_picks_up_edits_under_load_and_removals(tmp_path):
    repo = repository(tmp_path)
    srv = poll_server(repo, tmp_path)
    failures, seen, stop = [], set(), threading.Event()

    def hammer():
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        while not stop.is_set():
            try:
                seen.add(float(infer(c)[0]))
            except InferenceServerException as exc:
                failures.append(str(exc))
        c.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        write(repo / "scale.yaml", scale_file(9))  # edited while serving under load
        deadline = time.monotonic() + WAIT_S
        while 9.0 not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        assert 9.0 in seen and failures == []
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        (repo / "words.yaml").unlink()  # removed: unloaded
        while served(c, "words") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not served(c, "words")
        with pytest.raises(InferenceServerException, match="control mode is 'poll'"):
            c.unload_model("scale", headers=AUTH)
        c.close()
    finally:
        stop.set()
        stop_server(srv)


def test_poll_mode_picks_up_version_folders(tmp_path):
    """Triton's layout under poll: a new DIR/NAME/N folder is served, a removed one unloaded."""
    repo = repository(tmp_path)
    srv = poll_server(repo, tmp_path)
    c = grpcclient.InferenceServerClient(srv.grpc_url)

    def versions() -> list[str]:
        return c.get_model_metadata("multi", headers=AUTH, as_json=True)["versions"]

    def wait_for(wanted: list[str]) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        while versions() != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        return versions()

    try:
        assert versions() == ["1", "2"]  # version_policy all, in multi/2
        v3 = scale_file(30, "version_policy: {policy: all}").replace(
            '"fns.py:scale"', '"../../fns.py:scale"'
        )
        write(repo / "multi" / "3" / "pipeline.yaml", v3)  # a new version folder
        assert wait_for(["1", "2", "3"]) == ["1", "2", "3"]
        assert infer(c, "multi", "3")[0] == 30.0 and infer(c, "multi")[0] == 30.0
        shutil.rmtree(repo / "multi" / "1")  # a removed version folder
        assert wait_for(["2", "3"]) == ["2", "3"]
        with pytest.raises(InferenceServerException, match=r"version '1' is not served"):
            infer(c, "multi", "1")
        assert infer(c, "multi", "2")[0] == 20.0
        shutil.rmtree(repo / "multi")  # the whole model folder: unloaded
        deadline = time.monotonic() + WAIT_S
        while served(c, "multi") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not served(c, "multi")
    finally:
        c.close()
        stop_server(srv)
