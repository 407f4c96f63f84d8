"""The syntax of `when:` conditions: tokens, the parser and the expression tree it builds.
What an expression means (its types and its value) is in engine/condition.py.

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | compare
    compare  := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand  := NUMBER | STRING | true | false | NAME | len(expr) | "(" expr ")"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


class Parser:
    """Recursive descent over the grammar above; `parse()` returns the expression tree."""

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
