"""The API key that both protocols require when `pipectl serve --api-key` is set.

Clients send `authorization: Bearer KEY` (gRPC metadata or HTTP header; the openai client does
this with `api_key=`). Keys are compared in constant time. Health checks stay open so that
load balancers and orchestrators can probe the server.
"""

from __future__ import annotations

import hmac

DENIED = "missing or wrong API key: send the header 'authorization: Bearer <key>'"


class ApiKey:
    """A configured key and the checks for each protocol."""

    def __init__(self, key: str):
        if not key:
            raise ValueError("the API key is empty")
        self._expected = f"Bearer {key}".encode()

    def accepts(self, authorization: str | bytes | None) -> bool:
        """True when an `authorization` header value carries the key (constant time)."""
        if authorization is None:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode()
        return hmac.compare_digest(authorization.strip(), self._expected)

    def grpc_interceptor(self, exempt: tuple[str, ...] = ()):
        """A grpc.aio interceptor refusing calls without the key (UNAUTHENTICATED); methods of
        the `exempt` services pass."""
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
                if handler is None or service in exempt:
                    return handler
                for name, value in details.invocation_metadata or ():
                    if name == "authorization" and key.accepts(value):
                        return handler
                return deny_handler(handler)

        return _Interceptor()

    def http_middleware(self, exempt_prefixes: tuple[str, ...] = ()):
        """An aiohttp middleware answering 401 without the key; paths under `exempt_prefixes`
        pass."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            if request.path.startswith(exempt_prefixes) or self.accepts(
                request.headers.get("Authorization")
            ):
                return await handler(request)
            return web.json_response(
                {"error": DENIED}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )

        return middleware
