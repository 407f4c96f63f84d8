"""Which benchmark target a command-line spec names: a pipeline file (in process), or a server
over gRPC (`grpc://HOST:PORT`), KServe HTTP (`http://HOST:PORT`) or OpenAI (`http://HOST:PORT/v1`)."""

from __future__ import annotations

from pathlib import Path


def make_target(spec: str, model: str | None, api_key: str | None, outputs: list[str] | None):
    """The Target that `spec` names (see the command's description)."""
    from engine.bench.remote import Grpc, Http
    from engine.bench.targets import InProcess

    if spec.startswith("grpc://"):
        return Grpc(spec.removeprefix("grpc://").rstrip("/"), model, api_key)
    if spec.startswith(("http://", "https://")):
        base = spec.rstrip("/")
        if base.endswith("/v1"):
            return Http(base.removesuffix("/v1"), model, api_key, openai=True)
        return Http(base, model, api_key)
    if Path(spec).is_file():
        return InProcess(spec, outputs)
    raise ValueError(
        f"{spec!r} is neither a pipeline file nor a URL (grpc://HOST:PORT, http://HOST:PORT, "
        "http://HOST:PORT/v1)"
    )
