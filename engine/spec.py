"""The pipeline file's schema (ARCHITECTURE §1) as pydantic models, and `load_spec(path)`.

Every model forbids unknown keys. `load_spec` keeps the file path, its folder (plain paths in params
resolve against it) and the line of every key, so that schema errors, and every later check, cite
`file:line` and the dotted path of the offending key. Error codes (E-SPEC-*) are listed in graph.py.
"""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.errors import Issue, SpecError
from engine.yaml_loader import LineMap, dotted, load_yaml
from nodes.dtypes import DTYPES, Shape, numpy_dtype

API_VERSION = "pipectl/v1"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
MAX_VERSION = 2**63 - 1  # a model version is an int64 (Triton's model_version)
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
DType = Literal[DTYPES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Strict):
    """A pipeline input: KServe v2 dtype and shape without the batch dimension (-1 = variable)."""

    dtype: DType
    shape: Shape
    optional: bool = False
    default: Any = None

    @model_validator(mode="after")
    def _default_fits_dtype(self) -> InputSpec:
        if self.default is not None and self.dtype != "BYTES":
            try:
                np.asarray(self.default).astype(numpy_dtype(self.dtype), casting="same_kind")
            except (TypeError, ValueError):
                raise ValueError(
                    f"default {self.default!r} is not a valid {self.dtype} value"
                ) from None
        return self


class BatchingSpec(_Strict):
    """Dynamic batching settings; a field left out is inherited from `defaults.batching`."""

    max_batch_size: Annotated[int, Field(ge=1)] | None = None
    max_queue_delay_ms: Annotated[float, Field(ge=0)] | None = None
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = None
    priority_levels: Annotated[int, Field(ge=1)] | None = None
    default_priority: Annotated[int, Field(ge=1)] | None = None
    max_queue_size: Annotated[int, Field(ge=0)] | None = None
    timeout_ms: Annotated[float, Field(ge=0)] | None = None


class ResourcesSpec(_Strict):
    """What each Ray actor of a node reserves on its Ray node (Ray's own resource names):
    `num_cpus` and `num_gpus` (fractions allowed), `memory` in bytes, and `custom` resources
    declared by `ray start --resources`, e.g. `{zone_a: 1}`."""

    num_cpus: Annotated[float, Field(ge=0)] | None = None
    num_gpus: Annotated[float, Field(ge=0)] | None = None
    memory: Annotated[int, Field(ge=0)] | None = None
    custom: dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict
    )

    @field_validator("custom")
    @classmethod
    def _custom_is_not_builtin(cls, custom: dict[str, float]) -> dict[str, float]:
        builtin = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
        for name in custom:
            if name in builtin:
                raise ValueError(f"custom resource {name!r} is Ray's own: write {builtin[name]}")
        return custom


class PlacementSpec(_Strict):
    """Where a node's instances run. `device`: auto (a GPU when present, else CPU), cpu, cuda (any
    GPU) or cuda:N; `devices` narrows the choice to a list of those. `backend`: `local` (threads
    of this process, the default) or `ray` (one Ray actor per instance, holding `resources`,
    restarted up to `max_restarts` times; -1: without end)."""

    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] | None = None
    instances: Annotated[int, Field(ge=1)] | None = None
    devices: list[Annotated[str, Field(pattern=DEVICE_PATTERN)]] | None = None
    backend: Literal["local", "ray"] | None = None
    resources: ResourcesSpec | None = None
    max_restarts: Annotated[int, Field(ge=-1)] | None = None


class ResponseCacheSpec(_Strict):
    """Triton's response cache for the pipeline or one node: LRU-bounded by entries and bytes."""

    max_entries: Annotated[int, Field(ge=1)] = 1024
    max_bytes: Annotated[int, Field(ge=1)] = 64 << 20


class NodeSpec(_Strict):
    """One node: its kind, the kind's params, where its inputs come from, batching, placement and
    an optional `when:` condition over its input ports."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[Name, str] = Field(default_factory=dict)
    batching: BatchingSpec | None = None
    placement: PlacementSpec | None = None
    when: str | None = None
    response_cache: ResponseCacheSpec | None = None  # Triton's, on this node alone


class DefaultsSpec(_Strict):
    """Settings every node inherits unless it sets its own."""

    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)


class VersionPolicySpec(_Strict):
    """Which versions of a model a repository serves (Triton's version_policy): the
    `num_versions` highest (`latest`), every one (`all`), or the listed `versions` (`specific`)."""

    policy: Literal["latest", "all", "specific"] = "latest"
    num_versions: Annotated[int, Field(ge=1)] = 1
    versions: list[Annotated[int, Field(ge=1, le=MAX_VERSION)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _versions_given(self) -> VersionPolicySpec:
        if self.policy == "specific" and not self.versions:
            raise ValueError("policy 'specific' needs 'versions: [N, ...]'")
        return self


class PipelineSpec(_Strict):
    """A whole pipeline file."""

    api_version: Literal["pipectl/v1"] = Field(alias="apiVersion")
    name: Name
    description: str = ""
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)] = 1  # the model version (int64, as Triton)
    version_policy: VersionPolicySpec | None = None  # read from a model's highest version
    response_cache: ResponseCacheSpec | None = None
    inputs: dict[Name, InputSpec] = Field(default_factory=dict)
    outputs: Annotated[dict[Name, str], Field(min_length=1)]
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    nodes: dict[Name, NodeSpec] = Field(default_factory=dict)

    _file: str = PrivateAttr(default="")
    _base_dir: str = PrivateAttr(default=".")
    _lines: LineMap = PrivateAttr(default_factory=LineMap)

    @property
    def file(self) -> str:
        return self._file

    @property
    def base_dir(self) -> str:
        return self._base_dir

    @property
    def lines(self) -> LineMap:
        return self._lines

    def line(self, path: str | tuple) -> int:
        """Line of a dotted path (or of its nearest ancestor in the file)."""
        return self._lines.line(path)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline file. Raises SpecError with every schema problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Issue("E-SPEC-FILE", f"cannot read the file: {exc}", file, 0)]) from None
    return parse_spec(text, file, base_dir=str(Path(path).resolve().parent))


def parse_spec(text: str, file: str = "<string>", base_dir: str = ".") -> PipelineSpec:
    """Validate a pipeline given as YAML text; `base_dir` resolves the relative paths in it."""
    data, lines = load_yaml(text, file)
    if not isinstance(data, dict):
        raise SpecError(
            [Issue("E-SPEC-TYPE", "the pipeline file must be a mapping of keys", file, 1)]
        )
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_issues(exc, file, lines, (), "E-SPEC", PipelineSpec)) from None
    spec._file, spec._base_dir, spec._lines = file, base_dir, lines
    return spec


def spec_json_schema() -> dict:
    """The JSON Schema of pipeline files (by the names used in YAML)."""
    schema = PipelineSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pipectl pipeline file"
    return schema


def validation_issues(
    exc: ValidationError,
    file: str,
    lines: LineMap,
    prefix: tuple,
    code: str,
    model: type[BaseModel] | None = None,
) -> list[Issue]:
    """Turn pydantic errors into Issues at the line of the offending key. `prefix` is where the
    validated data sits in the file; `code` is the code family (E-SPEC, E-PARAMS)."""
    issues = []
    for err in exc.errors(include_url=False):
        loc = _data_loc(err["loc"])
        path = (*prefix, *loc)
        kind = err["type"]
        hint = ""
        if kind == "extra_forbidden":
            suffix, message = "UNKNOWN-FIELD", f"unknown field {loc[-1]!r}"
            allowed = _fields_at(model, loc[:-1]) if model else []
            if allowed:
                close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                hint = (
                    (f"did you mean {close[0]!r}? " if close else "")
                    + "fields: "
                    + ", ".join(allowed)
                )
        elif kind == "missing":
            suffix, message = "MISSING", f"missing required field {loc[-1]!r}"
        else:
            suffix = "VALUE"
            text = err["msg"].removeprefix("Value error, ")
            message = f"{dotted(loc) or 'value'}: {text}"
            hint = _PATTERN_HINTS.get(err.get("ctx", {}).get("pattern", ""), "")
            if "input" in err and not isinstance(err["input"], dict | list):
                message += f" (got {json.dumps(err['input'], default=str)})"
        issues.append(
            Issue(f"{code}-{suffix}", message, file, lines.line(path), dotted(path), hint)
        )
    return issues


_PATTERN_HINTS = {
    DEVICE_PATTERN: "devices are auto, cpu, cuda (any GPU) or cuda:N",
    NAME_PATTERN: "names are letters, digits, _ and -, starting with a letter or _",
}


def _data_loc(loc: tuple) -> tuple:
    # pydantic adds "[key]" for dict-key errors and union member tags; neither is in the file.
    return tuple(
        p for p in loc if p != "[key]" and not (isinstance(p, str) and p.startswith("function-"))
    )


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names (by alias) of the model found at `loc` inside `model`, or []."""
    current: Any = model
    parts = list(loc)
    while True:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if origin is dict or origin is list:
            if not parts:
                return []
            parts.pop(0)
            current = typing.get_args(current)[-1]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        fields = {(f.alias or n): f for n, f in current.model_fields.items()}
        if not parts:
            return list(fields)
        part = parts.pop(0)
        if part not in fields:
            return []
        current = fields[part].annotation


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and `X | None` down to X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, type(int | None)):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
