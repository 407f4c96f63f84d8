"""`when:` conditions: a small, safe expression language over a node's input ports (never eval).
This file is what an expression means (its types and its value); engine/condition_syntax.py
parses it.

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | compare
    compare  := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand  := NUMBER | STRING | true | false | NAME | len(expr) | "(" expr ")"

Names are the node's input ports. At run time a 1-element array compares as its scalar, BYTES
decode as UTF-8 strings, `len(x)` of an array is its element count and of a string its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.condition_syntax import (
    BoolOp,
    Compare,
    ConditionError,
    Const,
    Len,
    Name,
    Not,
    Parser,
)
from nodes.base import TensorSpec

__all__ = ["Condition", "ConditionError", "parse_condition"]


@dataclass(frozen=True)
class Condition:
    """A parsed `when:` expression. `names` are the input ports it reads."""

    text: str
    root: Any
    names: frozenset[str]

    def evaluate(self, values: dict[str, np.ndarray]) -> bool:
        """True when the node should run, given its input tensors (shape without batch)."""
        return _truth(_eval(self.root, values), self.root)

    def type_errors(self, types: dict[str, TensorSpec]) -> list[ConditionError]:
        """Problems found by checking the expression against the input ports' dtypes and shapes."""
        errors: list[ConditionError] = []
        _type_of(self.root, types, errors)
        return errors

    def constant_lengths(self, types: dict[str, TensorSpec]) -> list[ConditionError]:
        """`len(x)` where x's shape is fixed: always the same element count (a likely mistake:
        the length of a BYTES [1] text is 1, not the number of characters)."""
        notes = []
        for node in _walk(self.root):
            if isinstance(node, Len) and isinstance(node.arg, Name):
                spec = types.get(node.arg.name)
                if spec is not None and all(d >= 0 for d in spec.shape):
                    count = int(np.prod(spec.shape)) if spec.shape else 1
                    notes.append(
                        ConditionError(
                            f"len({node.arg.name}) is always {count}: the element count of a "
                            f"{spec.dtype} {list(spec.shape)} tensor",
                            node.col,
                        )
                    )
        return notes


def parse_condition(text: str) -> Condition:
    """Parse a `when:` expression once; raises ConditionError with the column of the problem."""
    root = Parser(text).parse()
    return Condition(text, root, frozenset(_names(root)))


def _walk(node):
    """Every node of the tree, depth first."""
    yield node
    children = {Len: ("arg",), Not: ("item",), Compare: ("left", "right")}.get(type(node), ())
    for attr in children:
        yield from _walk(getattr(node, attr))
    if isinstance(node, BoolOp):
        for item in node.items:
            yield from _walk(item)


def _names(node) -> set[str]:
    return {n.name for n in _walk(node) if isinstance(n, Name)}


# --- static types: "number", "string", "bool", "array" (several elements), "any" (unknown) ---


def _port_type(spec: TensorSpec) -> str:
    fixed = all(d >= 0 for d in spec.shape)
    count = int(np.prod(spec.shape)) if spec.shape else 1
    if fixed and count != 1:
        return "array"
    if spec.dtype == "BYTES":
        return "string"
    return "bool" if spec.dtype == "BOOL" else "number"


def _type_of(node, types: dict[str, TensorSpec], errors: list[ConditionError]) -> str:
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return "bool"
        return "string" if isinstance(node.value, str) else "number"
    if isinstance(node, Name):
        spec = types.get(node.name)
        return _port_type(spec) if spec is not None else "any"
    if isinstance(node, Len):
        arg = _type_of(node.arg, types, errors)
        if arg in ("number", "bool") and not isinstance(node.arg, Name):
            errors.append(ConditionError(f"len() of a {arg} value", node.col))
        return "number"
    if isinstance(node, Not):
        _type_of(node.item, types, errors)
        return "bool"
    if isinstance(node, BoolOp):
        for item in node.items:
            _type_of(item, types, errors)
        return "bool"
    assert isinstance(node, Compare)
    left, right = _type_of(node.left, types, errors), _type_of(node.right, types, errors)
    for side, kind in ((node.left, left), (node.right, right)):
        if kind == "array":
            errors.append(
                ConditionError(
                    f"{_describe(side)} has several elements; compare len({_describe(side)}) "
                    "or a single value",
                    side.col,
                )
            )
    if "any" in (left, right) or "array" in (left, right):
        return "bool"
    if left != right and not {left, right} <= {"number", "bool"}:
        errors.append(
            ConditionError(
                f"cannot compare {_describe(node.left)} ({left}) with "
                f"{_describe(node.right)} ({right})",
                node.col,
            )
        )
    elif node.op not in ("==", "!=") and "bool" in (left, right):
        errors.append(ConditionError(f"'{node.op}' does not order booleans", node.col))
    return "bool"


def _describe(node) -> str:
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Const):
        return repr(node.value)
    return "the expression"


# --- evaluation ---


def _value(arr: np.ndarray, name: str) -> Any:
    arr = np.asarray(arr)
    if arr.size == 1:
        item = arr.reshape(-1)[0]
        if isinstance(item, bytes | np.bytes_):
            return bytes(item).decode("utf-8", errors="replace")
        return item.item() if isinstance(item, np.generic) else item
    return _Array(arr, name)


@dataclass(frozen=True)
class _Array:
    """A tensor of several elements: only len() and truth (non-empty) apply to it."""

    arr: np.ndarray
    name: str


def _eval(node, values: dict[str, np.ndarray]) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Name):
        if node.name not in values:
            raise ConditionError(f"input {node.name!r} is absent", node.col)
        return _value(values[node.name], node.name)
    if isinstance(node, Len):
        if isinstance(node.arg, Name) and node.arg.name in values:
            return int(np.asarray(values[node.arg.name]).size)
        value = _eval(node.arg, values)
        if isinstance(value, _Array):
            return int(value.arr.size)
        if isinstance(value, str):
            return len(value)
        raise ConditionError(f"len() of {type(value).__name__}", node.col)
    if isinstance(node, Not):
        return not _truth(_eval(node.item, values), node.item)
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_truth(_eval(i, values), i) for i in node.items)
        return any(_truth(_eval(i, values), i) for i in node.items)
    left, right = _eval(node.left, values), _eval(node.right, values)
    for side, value in ((node.left, left), (node.right, right)):
        if isinstance(value, _Array):
            raise ConditionError(
                f"{value.name} has {value.arr.size} elements; compare len({value.name})", side.col
            )
    if isinstance(left, str) != isinstance(right, str):
        raise ConditionError(f"cannot compare {left!r} with {right!r}", node.col)
    return _OPS[node.op](left, right)


def _truth(value: Any, node) -> bool:
    if isinstance(value, _Array):
        return value.arr.size > 0
    return bool(value)


_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
