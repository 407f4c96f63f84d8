"""The gRPC face with stock tritonclient against a real `pipectl serve`."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from tests.server.conftest import AUTH, gated_guard, start_server, stop_server, wait_for_file

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException


def _echo_inputs(texts, xs):
    text = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t] for t in texts], dtype=object))
    x = grpcclient.InferInput("x", [len(xs), 4], "FP32")
    x.set_data_from_numpy(np.asarray(xs, dtype=np.float32))
    return [text, x]


def _stats(client, model):
    (stats,) = client.get_inference_statistics(model, headers=AUTH, as_json=True)["model_stats"]
    return stats


def _count(stats, key="success"):
    return int(stats["inference_stats"].get(key, {}).get("count", 0))


def test_ready_only_after_loading(server, grpc_client):
    assert grpc_client.is_server_live(headers=AUTH)
    assert grpc_client.is_server_ready(headers=AUTH)
    assert grpc_client.is_model_ready("echo", headers=AUTH)
    assert grpc_client.is_model_ready("embed.encode", headers=AUTH)
    # while the encoder loaded, the server was live but not ready
    assert (200, 503) in server.observed


def test_infer_splits_the_batch_and_stacks_results(grpc_client):
    xs = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = grpc_client.infer(
        "echo", _echo_inputs([b"ab", "h\u00e9".encode(), b""], xs), request_id="r1", headers=AUTH
    )
    assert result.as_numpy("upper").tolist() == [[b"AB"], ["H\u00e9".encode()], [b""]]
    np.testing.assert_array_equal(result.as_numpy("doubled"), xs * 2)
    assert result.as_numpy("length").tolist() == [[2], [3], [0]]
    assert result.get_response().id == "r1"


def test_subset_of_outputs_runs_only_the_nodes_it_needs(grpc_client):
    before_scale = _count(_stats(grpc_client, "echo.scale"))
    before_length = _count(_stats(grpc_client, "echo.length"))
    result = grpc_client.infer(
        "echo",
        _echo_inputs([b"abc"], [[1, 2, 3, 4]]),
        outputs=[grpcclient.InferRequestedOutput("length")],
        headers=AUTH,
    )
    assert [o.name for o in result.get_response().outputs] == ["length"]
    assert result.as_numpy("length").tolist() == [[3]]
    assert _count(_stats(grpc_client, "echo.length")) == before_length + 1
    assert _count(_stats(grpc_client, "echo.scale")) == before_scale


def test_a_node_alone(grpc_client):
    x = grpcclient.InferInput("x", [2, 4], "FP32")
    x.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
    result = grpc_client.infer("echo.scale", [x], headers=AUTH)
    np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 4), 2.0, np.float32))


def test_typed_contents_through_the_stock_stub(server):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="echo")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[1, 1])
    text.contents.bytes_contents.append(b"typed")
    x = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    x.contents.fp32_contents.extend([1, 2, 3, 4])
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=tuple(AUTH.items()), timeout=10)
    outputs = {o.name: i for i, o in enumerate(response.outputs)}
    raw = response.raw_output_contents
    assert raw[outputs["upper"]] == b"\x05\x00\x00\x00TYPED"
    assert np.frombuffer(raw[outputs["doubled"]], np.float32).tolist() == [2, 4, 6, 8]


def test_metadata_and_ensemble_config(grpc_client):
    meta = grpc_client.get_model_metadata("echo", headers=AUTH, as_json=True)
    assert meta["platform"] == "ensemble"
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {
        "text": ["-1", "1"],
        "x": ["-1", "4"],
    }
    config = grpc_client.get_model_config("echo", headers=AUTH).config
    assert config.platform == "ensemble" and config.max_batch_size == 16
    steps = {s.model_name: s for s in config.ensemble_scheduling.step}
    assert set(steps) == {"echo.upper", "echo.length", "echo.scale"}
    assert dict(steps["echo.length"].input_map) == {"text": "upper"}
    assert dict(steps["echo.length"].output_map) == {"n": "length"}
    assert not config.model_transaction_policy.decoupled
    node = grpc_client.get_model_config("guard.slow", headers=AUTH).config
    assert node.backend == "pipectl" and node.max_batch_size == 1
    assert node.instance_group[0].count == 1
    server_meta = grpc_client.get_server_metadata(headers=AUTH)
    assert server_meta.name == "pipectl" and "statistics" in server_meta.extensions


def test_statistics_per_pipeline_and_node(grpc_client):
    grpc_client.infer("echo", _echo_inputs([b"s"], [[0, 0, 0, 0]]), headers=AUTH)
    everything = grpc_client.get_inference_statistics(headers=AUTH, as_json=True)["model_stats"]
    names = {s["name"] for s in everything}
    assert {"echo", "echo.upper", "guard.check", "embed.encode"} <= names
    pipeline = _stats(grpc_client, "echo")
    assert _count(pipeline) >= 1 and int(pipeline["execution_count"]) >= 1
    node = _stats(grpc_client, "echo.upper")
    assert _count(node) >= 1 and int(node["inference_stats"]["compute_infer"]["ns"]) > 0
    assert sum(int(b["compute_infer"]["count"]) for b in node["batch_stats"]) >= 1


def test_repository_index(grpc_client):
    index = grpc_client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    by_name = {m["name"]: m for m in index}
    assert by_name["echo"]["state"] == "READY" and "guard.check" in by_name


def test_health_and_reflection(server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # no key needed for health
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = stub.ServerReflectionInfo(iter([ask]), metadata=tuple(AUTH.items()), timeout=5)
        services = {s.name for s in reply.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        for symbol, file in [
            ("inference.GRPCInferenceService", "grpc_service.proto"),
            ("grpc.health.v1.Health", "grpc_health/v1/health.proto"),
        ]:
            ask = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
            (reply,) = stub.ServerReflectionInfo(
                iter([ask]), metadata=tuple(AUTH.items()), timeout=5
            )
            protos = reply.file_descriptor_response.file_descriptor_proto
            assert protos and file.encode() in protos[0], symbol


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(grpc_client):
    wrong = _echo_inputs([b"a"], [[1, 2, 3, 4]])
    wrong[1] = grpcclient.InferInput("x", [1, 4], "FP64")
    wrong[1].set_data_from_numpy(np.zeros((1, 4)))
    err = _error(lambda: grpc_client.infer("echo", wrong, headers=AUTH))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in err.message() and "scale" in err.message() and "FP64" in err.message()

    err = _error(
        lambda: grpc_client.infer("echo", _echo_inputs([b"a"], [[1, 2, 3, 4]])[:1], headers=AUTH)
    )
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "missing input 'x'" in err.message()

    err = _error(lambda: grpc_client.infer("nope", wrong, headers=AUTH))
    assert err.status() == "StatusCode.NOT_FOUND" and "echo" in err.message()

    big = grpcclient.InferInput("x", [70000, 4], "FP32")  # 1.1 MB > the 1 MiB limit
    big.set_data_from_numpy(np.zeros((70000, 4), dtype=np.float32))
    err = _error(lambda: grpc_client.infer("echo.scale", [big], headers=AUTH))
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED"

    good = _echo_inputs([b"a"], [[1, 2, 3, 4]])
    err = _error(lambda: grpc_client.infer("echo", good))
    assert err.status() == "StatusCode.UNAUTHENTICATED"
    err = _error(lambda: grpc_client.infer("echo", good, headers={"authorization": "Bearer nope"}))
    assert err.status() == "StatusCode.UNAUTHENTICATED"

    assert grpc_client.infer("echo", good, headers=AUTH).as_numpy("upper").tolist() == [[b"A"]]


def test_timeout_and_priority_parameters(grpc_client):
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    slow = [grpcclient.InferRequestedOutput("slow")]
    err = _error(
        lambda: grpc_client.infer("guard", [x], outputs=slow, timeout=100_000, headers=AUTH)
    )
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED" and "slow" in err.message()
    result = grpc_client.infer(
        "guard", [x], outputs=slow, priority=1, timeout=5_000_000, headers=AUTH
    )
    assert result.as_numpy("slow").tolist() == [[1.0]]


def test_a_failing_item_is_an_internal_error_naming_the_node(grpc_client):
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[-1]], dtype=np.float32))
    err = _error(
        lambda: grpc_client.infer(
            "guard", [x], outputs=[grpcclient.InferRequestedOutput("checked")], headers=AUTH
        )
    )
    assert err.status() == "StatusCode.INTERNAL" and "'check'" in err.message()


def test_stream_infer_of_a_unary_pipeline_sends_one_final_response(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=AUTH)
    try:
        client.async_stream_infer("echo", _echo_inputs([b"xy"], [[1, 1, 1, 1]]), request_id="s1")
        client.async_stream_infer("nope", _echo_inputs([b"xy"], [[1, 1, 1, 1]]), request_id="s2")
        got = [responses.get(timeout=10) for _ in range(2)]
    finally:
        client.stop_stream()
        client.close()
    results = [r for r, e in got if e is None]
    errors = [e for r, e in got if e is not None]
    assert len(results) == 1 and len(errors) == 1 and "nope" in str(errors[0])
    response = results[0].get_response()
    assert response.parameters["triton_final_response"].bool_param
    assert results[0].as_numpy("upper").tolist() == [[b"XY"]]


def test_a_full_queue_is_resource_exhausted(tmp_path):
    # guard.slow computes one item at a time and queues at most one more. Its instance is held
    # inside the node by a gate file, so which request computes, waits or is refused does not
    # depend on how fast this machine is.
    pipeline, gate = gated_guard(tmp_path)
    srv = start_server([str(pipeline)], log=tmp_path / "serve.log")
    try:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        slow = [grpcclient.InferRequestedOutput("slow")]
        outcomes: queue.Queue = queue.Queue()

        def send() -> None:
            client.async_infer(
                "guard", [x], callback=lambda result, error: outcomes.put(error), outputs=slow
            )

        send()
        wait_for_file(gate / "entered")  # the first request holds the only instance
        send()
        send()
        refused = outcomes.get(
            timeout=30
        )  # one of the two waits in the queue, the other is refused
        (gate / "open").touch()
        others = [outcomes.get(timeout=30) for _ in range(2)]
        client.close()
    finally:
        stop_server(srv)
    assert refused is not None and refused.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "slow" in refused.message()
    assert others == [None, None]


def test_stream_infer_streams_the_llm_tokens(server):
    import json

    client = grpcclient.InferenceServerClient(server.grpc_url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=AUTH)
    messages = grpcclient.InferInput("messages", [1, 1], "BYTES")
    chat = [{"role": "user", "content": "Count to five."}]
    messages.set_data_from_numpy(np.array([[json.dumps(chat).encode()]], dtype=object))
    limit = grpcclient.InferInput("max_tokens", [1, 1], "INT64")
    limit.set_data_from_numpy(np.array([[5]], dtype=np.int64))
    got = []
    try:
        client.async_stream_infer("chat", [messages, limit], request_id="llm")
        while not got or not got[-1].get_response().parameters["triton_final_response"].bool_param:
            result, error = responses.get(timeout=60)
            assert error is None, error
            got.append(result)
    finally:
        client.stop_stream()
        client.close()
    texts = [r.as_numpy("text")[0, 0] for r in got if r.as_numpy("text") is not None]
    assert len([t for t in texts if t]) >= 2  # several token deltas, not one block
    assert got[-1].as_numpy("completion_tokens").tolist() == [[5]]
    assert got[-1].as_numpy("finish_reason").tolist() == [[b"length"]]
