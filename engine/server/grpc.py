"""The KServe v2 gRPC face (`inference.GRPCInferenceService`, grpc.aio), plus the standard health
and reflection services. It only translates between protobuf and `Repository`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import numpy as np
from google.protobuf import json_format

from engine.errors import InvalidInput, RequestError
from engine.options import RequestOptions
from engine.server import describe, tensors
from engine.server.auth import ApiKey
from engine.server.kserve_body import NOT_SUPPORTED
from engine.server.model_control import (
    check_repository_name,
    model_control,
    repository_index,
)
from engine.server.repository import Repository, ServedModel
from nodes.dtypes import kserve_dtype
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("pipectl.server")
SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors: raw_input_contents (one per input, in order) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs (one per input)"
        )
    out = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in out:
            raise InvalidInput(f"input {tensor.name!r} is given twice")
        if raw:
            out[tensor.name] = tensors.from_raw(tensor.name, tensor.datatype, tensor.shape, raw[i])
        else:
            out[tensor.name] = tensors.from_contents(
                tensor.name, tensor.datatype, tensor.shape, tensor.contents
            )
    return out


def encode_outputs(
    model: ServedModel, outputs: dict[str, np.ndarray], response: pb.ModelInferResponse
) -> None:
    """Outputs into raw_output_contents (the datatype is the model's declared one)."""
    for name, array in outputs.items():
        spec = model.outputs.get(name)
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = spec.dtype if spec is not None else kserve_dtype(array.dtype)
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(tensors.to_raw(array))


def request_options(
    request: pb.ModelInferRequest, *, streaming: bool = False, traceparent: str | None = None
) -> RequestOptions:
    """The request's id, and priority and timeout (microseconds, as Triton) from its
    parameters. A parameter pipectl does not honour, or one of the wrong type, is refused by
    name."""
    options: dict = {"request_id": request.id, "traceparent": traceparent}
    allowed = {"priority", "timeout"} | (
        {"triton_enable_empty_final_response"} if streaming else set()
    )
    for key, value in request.parameters.items():
        if key not in allowed:
            reason = NOT_SUPPORTED.get(key, "unknown parameter")
            raise InvalidInput(
                f"parameter {key!r}: {reason}; parameters: {', '.join(sorted(allowed))}"
            )
        choice = value.WhichOneof("parameter_choice")
        if key == "triton_enable_empty_final_response":
            if choice != "bool_param":
                raise InvalidInput(f"parameter {key!r} must be a bool_param")
            continue
        if choice not in ("int64_param", "uint64_param"):
            raise InvalidInput(
                f"parameter {key!r} must be an int64_param or uint64_param, not {choice}"
            )
        number = getattr(value, choice)
        if number < 0:
            raise InvalidInput(f"parameter {key!r} must be >= 0, got {number}")
        if key == "priority":
            options["priority"] = number or None
        else:
            options["timeout_s"] = number / 1e6 if number > 0 else None
    for kind, tensors_ in (("input", request.inputs), ("output", request.outputs)):
        for tensor in tensors_:
            for key in tensor.parameters:
                reason = NOT_SUPPORTED.get(key, "unknown parameter")
                raise InvalidInput(f"{kind} {tensor.name!r}: parameter {key!r}: {reason}")
    return RequestOptions.of(**options)


def _repository_parameters(request) -> dict:
    """A load/unload request's parameters as Python values (bool_param a bool, int64_param an
    int, ...), for model_control to check by type; an unset one is None."""
    params = {}
    for key, value in request.parameters.items():
        choice = value.WhichOneof("parameter_choice")
        params[key] = getattr(value, choice) if choice else None
    return params


def _requested(request: pb.ModelInferRequest) -> list[str] | None:
    return [o.name for o in request.outputs] or None


def _traceparent(context) -> str | None:
    """The client's W3C `traceparent` metadata, if sent."""
    for name, value in context.invocation_metadata() or ():
        if name == "traceparent":
            return value
    return None


def _parse(message_cls, data: dict):
    return json_format.ParseDict(data, message_cls())


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over a Repository."""

    def __init__(self, repo: Repository):
        self.repo = repo

    def _traceparent(self, context) -> str | None:
        """The client's W3C trace context, when a tracer reads it."""
        return _traceparent(context) if self.repo.propagate else None

    async def _abort(self, context, exc: RequestError):
        code = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL)
        await context.abort(code, str(exc))

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repo.ready)

    async def ModelReady(self, request, context):
        try:
            model = self.repo.get(request.name, request.version)
        except RequestError as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=self.repo.model_ready(model))

    async def ServerMetadata(self, request, context):
        return _parse(pb.ServerMetadataResponse, describe.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            model = self.repo.get(request.name, request.version)
        except RequestError as exc:
            await self._abort(context, exc)
        versions = self.repo.served_versions(model.name)
        return _parse(pb.ModelMetadataResponse, describe.model_metadata(model, versions))

    async def ModelConfig(self, request, context):
        try:
            model = self.repo.get(request.name, request.version)
        except RequestError as exc:
            await self._abort(context, exc)
        return _parse(pb.ModelConfigResponse, {"config": describe.model_config(model)})

    async def ModelStatistics(self, request, context):
        try:
            stats = describe.statistics(self.repo, request.name, request.version)
        except RequestError as exc:
            await self._abort(context, exc)
        return _parse(pb.ModelStatisticsResponse, stats)

    async def RepositoryIndex(self, request, context):
        try:
            check_repository_name(self.repo, request.repository_name)
        except RequestError as exc:
            await self._abort(context, exc)
        index = await repository_index(self.repo, ready_only=request.ready)
        return _parse(pb.RepositoryIndexResponse, {"models": index})

    async def RepositoryModelLoad(self, request, context):
        try:
            check_repository_name(self.repo, request.repository_name)
            control = model_control(self.repo, "load", _repository_parameters(request))
            await control.load(request.model_name)
        except RequestError as exc:
            await self._abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            check_repository_name(self.repo, request.repository_name)
            control = model_control(self.repo, "unload", _repository_parameters(request))
            await control.unload(request.model_name)
        except RequestError as exc:
            await self._abort(context, exc)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request, context):
        try:
            model = self.repo.get(request.model_name, request.model_version)
            outputs = await self.repo.infer(
                request.model_name,
                decode_inputs(request),
                _requested(request),
                version=request.model_version,
                options=request_options(request, traceparent=self._traceparent(context)),
            )
        except RequestError as exc:
            await self._abort(context, exc)
        except Exception as exc:  # a bug of ours: logged, INTERNAL, served on
            log.exception("unexpected error in ModelInfer")
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=model.version, id=request.id
        )
        encode_outputs(model, outputs, response)
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        """Decoupled: each request runs concurrently; responses (and in-band errors) are written
        as they come, the last of a request flagged `triton_final_response`."""
        lock = asyncio.Lock()
        tasks: set[asyncio.Task] = set()

        async def write(message):
            async with lock:
                await context.write(message)

        async def serve(request):
            empty_final = False
            if "triton_enable_empty_final_response" in request.parameters:
                empty_final = request.parameters["triton_enable_empty_final_response"].bool_param
            try:
                model = self.repo.get(request.model_name, request.model_version)
                events = self.repo.stream(
                    request.model_name,
                    decode_inputs(request),
                    _requested(request),
                    version=request.model_version,
                    options=request_options(
                        request, streaming=True, traceparent=self._traceparent(context)
                    ),
                )
                async with contextlib.aclosing(events):  # a dropped stream frees its work now
                    async for outputs, final in events:
                        if final and not outputs and not empty_final:
                            continue
                        response = pb.ModelInferResponse(
                            model_name=request.model_name, model_version=model.version,
                            id=request.id,
                        )  # fmt: skip
                        encode_outputs(model, outputs, response)
                        response.parameters["triton_final_response"].bool_param = final
                        await write(pb.ModelStreamInferResponse(infer_response=response))
            except RequestError as exc:
                await write(pb.ModelStreamInferResponse(error_message=str(exc)))
            except Exception as exc:  # a bug of ours: logged, answered in band, stream serves on
                log.exception("unexpected error in ModelStreamInfer")
                message = f"internal error: {type(exc).__name__}: {exc}"
                await write(pb.ModelStreamInferResponse(error_message=message))

        try:
            async for request in request_iterator:
                task = asyncio.create_task(serve(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:  # the client went away: stop its requests (frees LLM sequences)
            for task in tasks:
                task.cancel()


def build_server(
    repo: Repository,
    host: str,
    port: int,
    *,
    api_key: ApiKey | None = None,
    max_request_bytes: int = 64 << 20,
):
    """A grpc.aio server with the inference, health and reflection services (not started).
    Returns (server, health servicer, bound port)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    interceptors = [api_key.grpc_interceptor(exempt=(HEALTH_SERVICE,))] if api_key else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(repo), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection.enable_server_reflection(
        (*names, reflection.SERVICE_NAME), server, pool=_reflection_pool()
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC on {host}:{port}")
    return server, health_servicer, bound


def _reflection_pool():
    """protos.pool.POOL (our protos live there, not in the default pool), plus the health and
    reflection protos so that reflection describes every service it lists."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    from protos.pool import POOL

    for module in (health_pb2, reflection_pb2):
        try:
            POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return POOL


async def set_health(health_servicer, serving: bool) -> None:
    """SERVING or NOT_SERVING for the whole server and the inference service."""
    from grpc_health.v1 import health_pb2

    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE):
        await health_servicer.set(name, status)
