"""What a failed load of a repository file tells its caller: the reason (naming the file once,
then each line, node and field) and its class. A failure caused by the file's content (it does
not compile; a node's params name a function that does not exist or a max_model_len above the
model's) is the caller's to fix: 400 / INVALID_ARGUMENT, as Triton answers a failed explicit
load. Anything else (a device that fails, a bug of ours) is the server's: 500 / INTERNAL."""

from __future__ import annotations

from pathlib import Path

from engine.errors import InvalidInput, NodeError, PipelineError, RequestError
from nodes.errors import InvalidConfig


def describe_compile_error(exc: PipelineError, path: Path) -> str:
    """The errors of a pipeline file that failed to compile, its path named once:
    "DIR/x.yaml: line 3: E-SPEC-YAML ...; line 9: E-GRAPH-... ..." (an issue in another file
    keeps its own file name)."""
    issues = [i for i in getattr(exc, "issues", None) or () if i.severity == "error"]
    if not issues:
        text = str(exc)
        return text if str(path) in text else f"{path}: {text}"
    parts = []
    for issue in issues:
        if issue.file and issue.file != str(path):
            parts.append(issue.format())
            continue
        where = f"line {issue.line}: " if issue.line else ""
        hint = f" ({issue.hint})" if issue.hint else ""
        parts.append(f"{where}{issue.code} {issue.message}{hint}")
    return f"{path}: " + "; ".join(parts)


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def load_failure(exc: BaseException, path: Path) -> tuple[str, type[RequestError]]:
    """(the reason, InvalidInput or NodeError) of a version of `path` that failed to start."""
    chain = list(_chain(exc))
    node = next((e.node for e in chain if isinstance(e, RequestError) and e.node), "")
    config = next((e for e in chain if isinstance(e, InvalidConfig)), None)
    where = f"node {node!r}" if node else "a node"
    if config is not None:
        field = f" field 'params.{config.field}'" if config.field else ""
        return f"{path}: {where}{field}: {config}", InvalidInput
    text = str(exc) if isinstance(exc, RequestError) else f"{type(exc).__name__}: {exc}"
    return f"{path}: {text}", NodeError
