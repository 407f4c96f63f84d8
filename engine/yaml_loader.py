"""YAML loading for pipeline files: duplicate keys are errors, and every key keeps its line.

`load_yaml(text, file)` returns the plain data and a `LineMap`, which answers "which line is
`nodes.encode.params.model` on?" so that every later error can cite `file:line`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import Issue, SpecError

PathKey = tuple[Any, ...]


@dataclass
class LineMap:
    """Line (1-based) of every mapping key and sequence item, keyed by its path of keys."""

    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: PathKey | str) -> int:
        """The line of `path`, or of its nearest ancestor that exists (1 for the document)."""
        key = _as_path(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def has(self, path: PathKey | str) -> bool:
        return _as_path(path) in self.lines


def _as_path(path: PathKey | str) -> PathKey:
    if isinstance(path, str):
        return tuple(p for p in path.split(".") if p) if path else ()
    return tuple(path)


def dotted(path: PathKey) -> str:
    """`('nodes', 'encode', 'params')` → `nodes.encode.params` (list indices as `[i]`)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader; the walk below records lines and duplicates before construction."""


def load_yaml(text: str, file: str = "") -> tuple[Any, LineMap]:
    """Parse one YAML document. Raises SpecError listing every duplicate key or the syntax error."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError([Issue("E-SPEC-EMPTY", "the pipeline file is empty", file, 1)])
        lines = LineMap({(): root.start_mark.line + 1})
        issues: list[Issue] = []
        _walk(loader, root, (), lines, issues, file)
        if issues:
            raise SpecError(issues)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        hint = _col(mark)
        context = exc.context_mark
        if context is not None and mark is not None and context.line != mark.line:
            hint += f"; the {exc.context.split()[-1] if exc.context else 'block'} began on line "
            hint += str(context.line + 1)
        raise SpecError(
            [Issue("E-SPEC-YAML", f"YAML syntax error: {message}", file, line, "", hint)]
        ) from None
    finally:
        loader.dispose()
    return data, lines


def _col(mark) -> str:
    return f"at column {mark.column + 1}" if mark is not None else ""


def _walk(loader, node, path: PathKey, lines: LineMap, issues: list[Issue], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<:` merge keys as the constructor would
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                issues.append(
                    Issue("E-SPEC-YAML", "a mapping key must be a scalar", file, line, dotted(path))
                )
                continue
            if key in seen:
                issues.append(
                    Issue(
                        "E-SPEC-DUPLICATE-KEY",
                        f"duplicate key {key!r} (first on line {seen[key]})",
                        file,
                        line,
                        dotted((*path, key)),
                        "each key may appear once per mapping; remove or rename one",
                    )
                )
                continue
            seen[key] = line
            lines.lines[(*path, key)] = line
            _walk(loader, value_node, (*path, key), lines, issues, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.lines[(*path, i)] = item.start_mark.line + 1
            _walk(loader, item, (*path, i), lines, issues, file)
