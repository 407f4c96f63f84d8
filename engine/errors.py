"""The error tree of pipectl. Every error a user sees is one of these.

    PipelineError                 base (defined in nodes/errors.py so nodes/ can raise it too)
    ├── SpecError                 the pipeline file does not parse or fails its schema
    ├── GraphError                the graph is wrong: unknown node or port, cycle, type mismatch
    ├── PlacementError            instances do not fit on the devices (with the numbers)
    ├── NotASubPlan               Executor.view was given a plan with nodes its parent lacks
    ├── UnknownKind               no node kind by that name; lists the kinds (nodes/registry.py)
    └── RequestError              a request is wrong or cannot be served
        ├── InvalidInput          wrong dtype, shape or missing input (names the input and node);
        │                         also what a node's nodes.errors.InvalidRequest becomes
        ├── NotFound              unknown pipeline or node
        ├── QueueFull             a batcher's max_queue_size is reached (rejected at once)
        ├── DeadlineExceeded      the request's timeout passed
        ├── Unavailable           loading or draining
        ├── Cancelled             the client went away
        └── NodeError             a node raised while computing (names the node and the request)

Problems found by checks are collected as `Issue` records; `SpecError`/`GraphError` carry the list.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from nodes.errors import PipelineError
from nodes.registry import UnknownKind

__all__ = ["PipelineError", "UnknownKind"]  # defined under nodes/, which cannot import engine/


@dataclass(frozen=True)
class Issue:
    """One problem found in a pipeline file: a code, where it is, what is wrong, how to fix it."""

    code: str
    message: str
    file: str = ""
    line: int = 0
    path: str = ""
    hint: str = ""
    severity: str = "error"  # or "warning"

    def format(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.code} {self.message}{hint}"

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "hint": self.hint,
            "severity": self.severity,
        }


def suggest(word: str, options, what: str) -> str:
    """A hint: "did you mean 'x'? <what>: a, b, c" (or that there are none)."""
    options = sorted(options)
    if not options:
        return f"{what}: none"
    close = difflib.get_close_matches(word, options, n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"{what}: {', '.join(options)}"


class _IssuesError(PipelineError):
    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("\n".join(i.format() for i in self.issues if i.severity == "error"))


class SpecError(_IssuesError):
    """The pipeline file does not parse or does not match the schema."""


class GraphError(_IssuesError):
    """The pipeline's graph is inconsistent."""


class PlacementError(PipelineError):
    """Node instances do not fit on the available devices. `field` says which request failed:
    "device" (no such device) or "memory" (no room), "" otherwise; `reason` is the message
    without the file:line prefix."""

    def __init__(self, message: str, *, field: str = "", where: str = ""):
        super().__init__(where + message)
        self.field = field
        self.reason = message


class NotASubPlan(PipelineError, ValueError):
    """`Executor.view(plan)`: `plan` names nodes the parent executor does not run."""


class RequestError(PipelineError):
    """A request cannot be served; `status` is the gRPC status code name it maps to."""

    status = "INTERNAL"

    def __init__(self, message: str, *, node: str = "", request_id: str = ""):
        self.node = node
        self.request_id = request_id
        super().__init__(message)


class InvalidInput(RequestError):
    status = "INVALID_ARGUMENT"

    @classmethod
    def unknown_input(cls, name: str, inputs: Iterable[str], model: str = "") -> InvalidInput:
        """A request names input `name`, which its pipeline (or served `model`) lacks."""
        known = ", ".join(inputs) or "(none)"
        if model:
            return cls(f"model {model!r} has no input {name!r}; inputs: {known}")
        return cls(f"unknown input {name!r}; inputs: {known}")


class NotFound(RequestError):
    status = "NOT_FOUND"


class QueueFull(RequestError):
    status = "RESOURCE_EXHAUSTED"

    @classmethod
    def at_node(cls, node: str, max_queue_size: int, request_id: str) -> QueueFull:
        """A batcher refused an item because its queue holds `max_queue_size` items."""
        return cls(
            f"node {node!r} queue is full (max_queue_size={max_queue_size}); "
            f"request {request_id!r} rejected",
            node=node,
            request_id=request_id,
        )


class DeadlineExceeded(RequestError):
    status = "DEADLINE_EXCEEDED"


class Unavailable(RequestError):
    status = "UNAVAILABLE"

    @classmethod
    def load_failed(cls, node: str, kind: str, exc: BaseException) -> Unavailable:
        """An instance of `node` could not construct or load its node."""
        error = cls(
            f"node {node!r} ({kind}) failed to load: {type(exc).__name__}: {exc}", node=node
        )
        error.__cause__ = exc
        return error

    @classmethod
    def stopping(cls, node: str, request_id: str = "") -> Unavailable:
        """The runner of `node` is stopping and takes no more items."""
        return cls(f"node {node!r} is stopping", node=node, request_id=request_id)


class Cancelled(RequestError):
    status = "CANCELLED"


class NodeError(RequestError):
    """A node raised while computing; the message names the node and the request."""

    status = "INTERNAL"


def node_failure(node: str, request_id: str, exc: BaseException) -> RequestError:
    """What an exception raised by node `node` on request `request_id` becomes: the request's
    own fault (nodes.errors.InvalidRequest → InvalidInput, 400 / INVALID_ARGUMENT, naming the
    node and the field), or the node's (anything else → NodeError, 500 / INTERNAL)."""
    from nodes.errors import InvalidRequest

    if isinstance(exc, InvalidRequest):
        field = f" field {exc.field!r}" if exc.field else ""
        error: RequestError = InvalidInput(
            f"node {node!r}{field}: {exc}", node=node, request_id=request_id
        )
    else:
        error = NodeError(
            f"node {node!r} failed on request {request_id!r}: {type(exc).__name__}: {exc}",
            node=node,
            request_id=request_id,
        )
    error.__cause__ = exc
    return error
