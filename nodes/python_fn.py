"""`python`: calls a user function on a whole batch, the escape hatch for custom logic.

    clean:
      kind: python
      params:
        function: steps.py:clean          # or an importable module: mypkg.steps:clean
        inputs:  {text: {dtype: BYTES, shape: [1]}}
        outputs: {text: {dtype: BYTES, shape: [1]}, length: {dtype: INT64, shape: [1]}}
        kwargs: {lower: true}             # passed to the function as keyword arguments

The function takes the list of item dicts (port → numpy array, no batch dimension) and returns a
list of output dicts in the same order. Returned values are converted to the declared dtypes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from nodes.base import Item, Node, NodeParams, Ports
from nodes.dtypes import as_bytes_array, numpy_dtype
from nodes.errors import InvalidConfig
from nodes.paths import resolve_path
from nodes.port_spec import PortMap, tensor_specs


class PythonParams(NodeParams):
    """Params of the `python` kind.

    | param    | meaning                                                                   |
    |----------|---------------------------------------------------------------------------|
    | function | `module:function`, or `file.py:function` relative to the pipeline's folder |
    | inputs   | input ports: `name: {dtype, shape, optional, default}` or `name: DTYPE`   |
    | outputs  | output ports, same form                                                   |
    | kwargs   | keyword arguments passed to every call                                    |
    """

    function: str
    inputs: PortMap = Field(default_factory=dict)
    outputs: PortMap
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _has_colon(cls, value: str) -> str:
        module, sep, attr = value.rpartition(":")
        if not sep or not module or not attr.isidentifier():
            raise ValueError(
                f"function {value!r}: expected 'module:function' or 'file.py:function'"
            )
        return value


class PythonNode(Node):
    """Runs `function(items, **kwargs) -> outputs` on each batch."""

    kind = "python"
    Params = PythonParams
    max_batch_size = 1 << 16

    params: PythonParams

    def __init__(self, params: PythonParams, base_dir: str | Path | None = None):
        super().__init__(params, base_dir)
        self._fn: Callable[..., list[dict[str, Any]]] | None = None
        self._outputs = tensor_specs(params.outputs)
        self._out_dtypes = {name: numpy_dtype(spec.dtype) for name, spec in self._outputs.items()}

    @classmethod
    def ports(cls, params: PythonParams) -> Ports:
        return Ports(inputs=tensor_specs(params.inputs), outputs=tensor_specs(params.outputs))

    def load(self, device: str) -> None:
        super().load(device)
        try:
            self._fn = load_function(self.params.function, self.base_dir)
        except Exception as exc:  # the file names it: a missing file or function, a bad module
            said = (
                str(exc) if self.params.function in str(exc) else f"{self.params.function}: {exc}"
            )
            raise InvalidConfig(f"{type(exc).__name__}: {said}", field="function") from exc

    def run_batch(self, items: list[Item]) -> list[Item]:
        if self._fn is None:
            raise RuntimeError("python node used before load()")
        results = self._fn(items, **self.params.kwargs)
        if not isinstance(results, list | tuple) or len(results) != len(items):
            got = f"{len(results)} results" if isinstance(results, list | tuple) else type(results)
            raise TypeError(
                f"{self.params.function} must return a list of {len(items)} dicts, got {got}"
            )
        return [self._convert(result) for result in results]

    def _convert(self, result: dict[str, Any]) -> Item:
        if not isinstance(result, dict):
            raise TypeError(f"{self.params.function} returned {type(result).__name__}, not a dict")
        out: Item = {}
        for name, dtype in self._out_dtypes.items():
            if name not in result:
                if self._outputs[name].optional:
                    continue
                raise KeyError(
                    f"{self.params.function} returned no output {name!r}; got {sorted(result)}"
                )
            value = result[name]
            if dtype == object:
                if not (isinstance(value, np.ndarray) and value.dtype == object):
                    value = as_bytes_array(value)
            elif not (isinstance(value, np.ndarray) and value.dtype == dtype):
                value = np.asarray(value, dtype=dtype)
            out[name] = value
        return out


def load_function(target: str, base_dir: str | Path | None = None) -> Callable[..., Any]:
    """The callable named by `module:function` or `path/file.py:function`."""
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py") or "/" in module_name:
        module = _load_file(resolve_path(module_name, base_dir))
    else:
        local = Path(base_dir) / f"{module_name.replace('.', '/')}.py" if base_dir else None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name.split(".")[0] or local is None or not local.is_file():
                raise
            module = _load_file(local)
    fn = getattr(module, attr, None)
    if not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise TypeError(f"{target}: no function {attr!r}; functions: {', '.join(public)}")
    return fn


_file_lock = threading.Lock()  # instances load in parallel threads; run each file once


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"python function file {path} does not exist")
    name = f"pipectl_user_{abs(hash(str(path.resolve())))}"
    with _file_lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
