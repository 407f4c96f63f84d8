"""The requests a benchmark sends, from `--input NAME=VALUE` and `--input-file requests.jsonl`,
checked against the target's input specs (the same value rules as `pipectl run`)."""

from __future__ import annotations

import numpy as np

from engine.bench.targets import Inputs
from nodes.base import TensorSpec
from nodes.jsonl import read_objects


def build_requests(
    specs: dict[str, TensorSpec], pairs: list[str], path: str | None, check_missing: bool = True
) -> list[Inputs]:
    """One request per line of `path` (`{"name": value}` or `{"id": .., "inputs": {..}}`), each
    completed by the `pairs`; or the `pairs` alone. Raises ValueError naming the input or line.
    `check_missing`: refuse requests without a required input (a server's metadata does not say
    which inputs are optional: there the server answers)."""
    from engine.commands.run import parse_value

    defaults: Inputs = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--input {pair!r}: expected NAME=VALUE")
        spec = _spec(specs, name, "--input")
        defaults[name] = _coerce(name, spec, parse_value(spec, text, name), "--input")
    if not path:
        if check_missing:
            _complete(specs, defaults, "--input")
        return [defaults]
    requests = []
    for number, record in read_objects(path):
        where = f"{path}:{number}"
        values = record["inputs"] if isinstance(record.get("inputs"), dict) else record
        request = dict(defaults)
        for name, value in values.items():
            request[name] = _coerce(name, _spec(specs, name, where), value, where)
        if check_missing:
            _complete(specs, request, where)
        requests.append(request)
    if not requests:
        raise ValueError(f"{path}: no requests in the file")
    return requests


def _spec(specs: dict[str, TensorSpec], name: str, where: str) -> TensorSpec:
    if name not in specs:
        raise ValueError(f"{where}: unknown input {name!r}; inputs: {', '.join(specs) or '(none)'}")
    return specs[name]


def _coerce(name: str, spec: TensorSpec, value, where: str) -> np.ndarray:
    from engine.coercion import coerce_input
    from engine.errors import PipelineError

    try:
        return coerce_input(name, spec, value)
    except (PipelineError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _complete(specs: dict[str, TensorSpec], request: Inputs, where: str) -> None:
    missing = [n for n, s in specs.items() if n not in request and not s.optional]
    if missing:
        raise ValueError(
            f"{where}: missing input {missing[0]!r}; give it with --input {missing[0]}=VALUE "
            "or in --input-file"
        )
