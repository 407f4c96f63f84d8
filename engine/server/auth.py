"""The API key that both protocols require when `pipectl serve --api-key` is set.

Clients send `authorization: Bearer KEY` (gRPC metadata or HTTP header; the openai client does
this with `api_key=`); the scheme is case-insensitive (RFC 7235 section 2.1). Keys are compared
in constant time. Health checks stay open so that load balancers, orchestrators and
tritonclient's is_server_live/is_server_ready/is_model_ready can probe the server, as Triton and
vLLM leave them: grpc.health.v1, KServe's ServerLive/ServerReady/ModelReady RPCs,
/v2/health/live, /v2/health/ready and /v2/models/NAME[/versions/V]/ready. Readiness says only
that a model can serve, never what it returns.
"""

from __future__ import annotations

import hmac
import re

DENIED = "missing or wrong API key: send the header 'authorization: Bearer <key>'"
KSERVE_SERVICE = "inference.GRPCInferenceService"
# the gRPC methods and HTTP paths that probe health (open with a key)
HEALTH_METHODS = tuple(
    f"/{KSERVE_SERVICE}/{m}" for m in ("ServerLive", "ServerReady", "ModelReady")
)
HEALTH_PATH = re.compile(r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready")


class ApiKey:
    """A configured key and the checks for each protocol."""

    def __init__(self, key: str):
        if not key:
            raise ValueError("the API key is empty")
        self._expected = key.encode()

    def accepts(self, authorization: str | bytes | None) -> bool:
        """True when an `authorization` header value carries the key (constant time)."""
        if authorization is None:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode()
        scheme, _, token = authorization.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected)

    def grpc_interceptor(self, exempt: tuple[str, ...] = ()):
        """A grpc.aio interceptor refusing calls without the key (UNAUTHENTICATED); methods of
        the `exempt` services and the KServe health methods (HEALTH_METHODS) pass."""
        import grpc

        key = self

        def deny_handler(handler):
            async def deny_unary(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

            async def deny_stream(request_iterator, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
                yield  # pragma: no cover - makes this a generator for stream responses

            streaming_in = handler.request_streaming
            factory = {
                (False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler,
            }[(streaming_in, handler.response_streaming)]
            behaviour = deny_stream if handler.response_streaming else deny_unary
            return factory(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        class _Interceptor(grpc.aio.ServerInterceptor):
            async def intercept_service(self, continuation, details):
                handler = await continuation(details)
                service = details.method.lstrip("/").partition("/")[0]
                if handler is None or service in exempt or details.method in HEALTH_METHODS:
                    return handler
                for name, value in details.invocation_metadata or ():
                    if name == "authorization" and key.accepts(value):
                        return handler
                return deny_handler(handler)

        return _Interceptor()

    def http_middleware(self, exempt_prefixes: tuple[str, ...] = ()):
        """An aiohttp middleware answering 401 without the key; paths under `exempt_prefixes`
        and the health paths (HEALTH_PATH) pass."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            path = request.path
            if (
                path.startswith(exempt_prefixes)
                or HEALTH_PATH.fullmatch(path)
                or self.accepts(request.headers.get("Authorization"))
            ):
                return await handler(request)
            return web.json_response(
                {"error": DENIED}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )

        return middleware
