"""`when:` conditions: a small, safe expression language over a node's input ports (never eval).

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | compare
    compare  := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand  := NUMBER | STRING | true | false | NAME | len(expr) | "(" expr ")"

Names are the node's input ports. At run time a 1-element array compares as its scalar, BYTES
decode as UTF-8 strings, `len(x)` of an array is its element count and of a string its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from nodes.base import TensorSpec

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|-)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "len"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


class ConditionError(ValueError):
    """A condition that does not parse, or cannot be evaluated; `column` is 1-based (0: none)."""

    def __init__(self, message: str, column: int = 0):
        self.column = column
        super().__init__(f"{message} at column {column}" if column else message)


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, string, name, op, keyword, end
    text: str
    col: int


# AST nodes. `col` is where the node starts in the text (1-based).
@dataclass(frozen=True)
class Const:
    value: Any
    col: int


@dataclass(frozen=True)
class Name:
    name: str
    col: int


@dataclass(frozen=True)
class Len:
    arg: Any
    col: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any
    col: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple
    col: int


@dataclass(frozen=True)
class Not:
    item: Any
    col: int


def _tokenize(text: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConditionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup
        if kind != "ws":
            word = m.group()
            if kind == "name" and word in _KEYWORDS:
                kind = "keyword"
            tokens.append(_Tok(kind, word, pos + 1))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.take()
        if tok.text != text:
            found = repr(tok.text) if tok.kind != "end" else "the end"
            raise ConditionError(f"expected {text!r}, found {found}", tok.col)
        return tok

    def parse(self):
        if self.peek().kind == "end":
            raise ConditionError("empty condition", 1)
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise ConditionError(f"unexpected {tok.text!r}", tok.col)
        return node

    def expr(self):
        return self._bool("or", self.and_expr)

    def and_expr(self):
        return self._bool("and", self.not_expr)

    def _bool(self, op: str, sub):
        first = sub()
        items = [first]
        while self.peek().kind == "keyword" and self.peek().text == op:
            self.take()
            items.append(sub())
        return first if len(items) == 1 else BoolOp(op, tuple(items), first.col)

    def not_expr(self):
        tok = self.peek()
        if tok.kind == "keyword" and tok.text == "not":
            self.take()
            return Not(self.not_expr(), tok.col)
        return self.compare()

    def compare(self):
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op" and tok.text in _COMPARE:
            self.take()
            right = self.operand()
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text in _COMPARE:
                raise ConditionError("chained comparisons are not supported; use 'and'", nxt.col)
            return Compare(tok.text, left, right, left.col)
        return left

    def operand(self):
        tok = self.take()
        if tok.kind == "number":
            return Const(_number(tok.text), tok.col)
        if tok.kind == "op" and tok.text == "-":
            num = self.take()
            if num.kind != "number":
                raise ConditionError("'-' must be followed by a number", tok.col)
            return Const(-_number(num.text), tok.col)
        if tok.kind == "string":
            return Const(_unquote(tok.text, tok.col), tok.col)
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            return Const(tok.text == "true", tok.col)
        if tok.kind == "keyword" and tok.text == "len":
            self.expect("(")
            arg = self.expr()
            self.expect(")")
            return Len(arg, tok.col)
        if tok.kind == "name":
            return Name(tok.text, tok.col)
        if tok.kind == "op" and tok.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        found = repr(tok.text) if tok.kind != "end" else "the end"
        raise ConditionError(f"expected a value, found {found}", tok.col)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _unquote(text: str, col: int) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            esc = body[i + 1]
            if esc not in _ESCAPES:
                raise ConditionError(f"unknown escape '\\{esc}'", col + i + 1)
            out.append(_ESCAPES[esc])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


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
    root = _Parser(text).parse()
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
