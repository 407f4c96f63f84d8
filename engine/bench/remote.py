"""Targets behind a running server: KServe v2 over gRPC (`grpc://HOST:PORT`, ModelInfer, or
ModelStreamInfer for a decoupled model), KServe v2 REST (`http://HOST:PORT`, infer, or Triton's
generate_stream for a decoupled model) and OpenAI (`http://HOST:PORT/v1`, streamed chat
completions). Server-side per-node counters come from ModelStatistics of the pipeline's steps
(`<pipeline>.<node>` models), as perf_analyzer reads Triton's.
"""

from __future__ import annotations

import json
import time

import numpy as np

from engine.bench.targets import Inputs, NodeCounters, Sample, Target, tokens_of
from nodes.base import TensorSpec


class BenchError(Exception):
    """The target cannot be benchmarked (unreachable, unknown model, ...)."""


def _counters(stats: dict) -> NodeCounters:
    """NodeCounters from one ModelStatistics entry in JSON form."""
    s = stats.get("inference_stats", {})

    def count(key: str) -> int:
        return int(s.get(key, {}).get("count", 0))

    def ns(key: str) -> int:
        return int(s.get(key, {}).get("ns", 0))

    return NodeCounters(
        count("success"), int(stats.get("execution_count", 0)), ns("queue"),
        ns("compute_infer"), count("fail"),
    )  # fmt: skip


def _specs(metadata: dict) -> dict[str, TensorSpec]:
    return {
        t["name"]: TensorSpec(t["datatype"], tuple(int(d) for d in t["shape"][1:]))
        for t in metadata.get("inputs", [])
    }


def _steps(config: dict) -> list[str]:
    steps = (config.get("ensemble_scheduling") or {}).get("step") or []
    return [s["model_name"] for s in steps]


def _json_value(array: np.ndarray):
    values = [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
    return values[0] if len(values) == 1 else values


class Grpc(Target):
    """KServe v2 gRPC with pipectl's own stubs on grpc.aio (one channel, many calls)."""

    def __init__(self, address: str, model: str | None, api_key: str | None):
        self.address, self.name, self.api_key = address, model or "", api_key
        self.description = f"grpc://{address}"

    async def open(self) -> None:
        import grpc
        from google.protobuf import json_format

        from protos import grpc_service_pb2 as pb
        from protos import grpc_service_pb2_grpc as pb_grpc

        self.pb, self.to_dict = pb, json_format.MessageToDict
        self.metadata = (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        try:
            if not self.name:
                index = await self.stub.RepositoryIndex(
                    pb.RepositoryIndexRequest(), metadata=self.metadata
                )
                self.name = _default_model([m.name for m in index.models])
            meta = await self.stub.ModelMetadata(
                pb.ModelMetadataRequest(name=self.name), metadata=self.metadata
            )
            config = await self.stub.ModelConfig(
                pb.ModelConfigRequest(name=self.name), metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"grpc://{self.address}: {exc.code().name}: {exc.details()}") from None
        self.inputs = _specs(self.to_dict(meta, preserving_proto_field_name=True))
        self.config = self.to_dict(config.config, preserving_proto_field_name=True)
        self.streaming = bool(self.config.get("model_transaction_policy", {}).get("decoupled"))
        self.steps = _steps(self.config)  # fmt: skip

    def _request(self, inputs: Inputs):
        from engine.server.tensors import to_raw

        request = self.pb.ModelInferRequest(model_name=self.name)
        for name, value in inputs.items():
            tensor = request.inputs.add(name=name, datatype=self.inputs[name].dtype)
            tensor.shape.extend([1, *value.shape])
            request.raw_input_contents.append(to_raw(value[np.newaxis]))
        return request

    async def call(self, inputs: Inputs) -> Sample:
        import grpc

        sample = Sample(time.perf_counter())
        request = self._request(inputs)
        try:
            if self.streaming:
                await self._stream(request, sample)
            else:
                await self.stub.ModelInfer(request, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            sample.error = f"{exc.code().name}: {exc.details()}"
        sample.end = time.perf_counter()
        return sample

    async def _stream(self, request, sample: Sample) -> None:
        from engine.server.tensors import from_raw

        call = self.stub.ModelStreamInfer(metadata=self.metadata)
        await call.write(request)
        await call.done_writing()
        outputs: dict = {}
        async for response in call:
            if response.error_message:
                sample.error = f"stream: {response.error_message}"
                return
            r = response.infer_response
            got = False
            for tensor, raw in zip(r.outputs, r.raw_output_contents, strict=False):
                array = from_raw(tensor.name, tensor.datatype, list(tensor.shape), raw)
                outputs[tensor.name] = array
                got = got or (array.dtype == object and any(len(v) for v in array.reshape(-1)))
            if got:
                sample.deltas.append(time.perf_counter())
            if r.parameters["triton_final_response"].bool_param:
                break
        sample.tokens = tokens_of(outputs, len(sample.deltas))

    async def counters(self) -> dict[str, NodeCounters]:
        stats = await self.stub.ModelStatistics(
            self.pb.ModelStatisticsRequest(name=""), metadata=self.metadata
        )
        return _node_counters(self.to_dict(stats, preserving_proto_field_name=True), self.steps)

    async def close(self) -> None:
        await self.channel.close()


def _node_counters(stats: dict, steps: list[str]) -> dict[str, NodeCounters]:
    by_name = {m["name"]: m for m in stats.get("model_stats", [])}
    return {s.partition(".")[2]: _counters(by_name[s]) for s in steps if s in by_name}


def _default_model(names: list[str]) -> str:
    pipelines = sorted({n for n in names if "." not in n})  # one per model, not per version
    if len(pipelines) != 1:
        raise BenchError(
            f"the server has {len(pipelines)} pipelines ({', '.join(pipelines) or 'none'}); "
            "pick one with --model"
        )
    return pipelines[0]


class Http(Target):
    """KServe v2 REST (JSON infer), or Triton's generate_stream (server-sent events) for a
    decoupled model; `openai` sends streamed /v1/chat/completions instead."""

    def __init__(self, base: str, model: str | None, api_key: str | None, openai: bool = False):
        self.base, self.name, self.openai = base.rstrip("/"), model or "", openai
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.description = self.base + ("/v1" if openai else "")

    async def _get(self, path: str) -> dict:
        async with self.session.get(self.base + path, headers=self.headers) as r:
            if r.status != 200:
                raise BenchError(f"GET {self.base}{path}: {r.status} {await r.text()}")
            return await r.json()

    async def open(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector)
        try:
            if not self.name:
                async with self.session.post(  # what serves, not what the folder holds
                    self.base + "/v2/repository/index", json={"ready": True}, headers=self.headers
                ) as r:
                    index = await r.json()
                self.name = _default_model([m["name"] for m in index])
            self.inputs = _specs(await self._get(f"/v2/models/{self.name}"))
            config = await self._get(f"/v2/models/{self.name}/config")
        except BaseException as exc:  # the caller never closes what failed to open
            await self.session.close()
            if isinstance(exc, aiohttp.ClientError):
                raise BenchError(f"{self.base}: {exc}") from None
            raise
        self.streaming = self.openai or bool(
            config.get("model_transaction_policy", {}).get("decoupled")
        )
        self.steps = _steps(config)  # fmt: skip

    async def call(self, inputs: Inputs) -> Sample:
        import aiohttp

        sample = Sample(time.perf_counter())
        try:
            if self.openai:
                await self._chat(inputs, sample)
            elif self.streaming:
                await self._generate_stream(inputs, sample)
            else:
                await self._infer(inputs, sample)
        except aiohttp.ClientError as exc:
            sample.error = f"{type(exc).__name__}: {exc}"
        sample.end = time.perf_counter()
        return sample

    async def _infer(self, inputs: Inputs, sample: Sample) -> None:
        from engine.server.tensors import to_json

        body = {
            "inputs": [
                {"name": n, "datatype": self.inputs[n].dtype, "shape": [1, *v.shape],
                 "data": to_json(v)}
                for n, v in inputs.items()
            ]
        }  # fmt: skip
        async with self.session.post(
            f"{self.base}/v2/models/{self.name}/infer", json=body, headers=self.headers
        ) as r:
            await r.read()
            if r.status != 200:
                sample.error = f"HTTP {r.status}"

    async def _events(self, url: str, body: dict, sample: Sample):
        """The `data:` payloads of a server-sent event stream, as dicts."""
        async with self.session.post(url, json=body, headers=self.headers) as r:
            if r.status != 200:
                sample.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                return
            async for line in r.content:
                if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                    yield json.loads(line[6:])

    async def _generate_stream(self, inputs: Inputs, sample: Sample) -> None:
        body = {n: _json_value(v) for n, v in inputs.items()}
        last: dict = {}
        url = f"{self.base}/v2/models/{self.name}/generate_stream"
        async for event in self._events(url, body, sample):
            if "error" in event:
                sample.error = f"stream: {event['error']}"
                return
            texts = (v for k, v in event.items() if k not in ("model_name", "model_version"))
            if any(isinstance(v, str) and v for v in texts):
                sample.deltas.append(time.perf_counter())
            last = event
        sample.tokens = tokens_of(last, len(sample.deltas))

    async def _chat(self, inputs: Inputs, sample: Sample) -> None:
        body = _chat_body(self.name, inputs)
        usage: dict = {}
        async for event in self._events(f"{self.base}/v1/chat/completions", body, sample):
            if "error" in event:
                sample.error = f"stream: {event['error']}"
                return
            for choice in event.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    sample.deltas.append(time.perf_counter())
            usage = event.get("usage") or usage
        sample.tokens = int(usage.get("completion_tokens") or len(sample.deltas))

    async def counters(self) -> dict[str, NodeCounters]:
        return _node_counters(await self._get("/v2/models/stats"), self.steps)

    async def close(self) -> None:
        await self.session.close()


def _chat_body(model: str, inputs: Inputs) -> dict:
    """A streamed chat request: `messages` as given (JSON), else the one text input as the user's
    message; scalar numeric inputs (max_tokens, temperature...) as fields."""
    body: dict = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    texts = {n: _json_value(v) for n, v in inputs.items() if v.dtype == object}
    if "messages" in texts:
        body["messages"] = json.loads(texts.pop("messages"))
    elif texts:
        body["messages"] = [{"role": "user", "content": texts.pop(next(iter(texts)))}]
    for name, value in inputs.items():
        if value.dtype != object:
            body[name] = _json_value(value)
    return body
