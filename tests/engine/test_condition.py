"""`when:` conditions: parsing with columns, evaluation on tensors, static type checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.condition import ConditionError, parse_condition
from nodes.base import TensorSpec


def b(*texts: str) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object)


VALUES = {
    "query": b("hello there"),
    "texts": b("a", "b", "c"),
    "count": np.array([3], dtype=np.int64),
    "score": np.array([0.25], dtype=np.float32),
    "flag": np.array([True]),
    "empty": np.array([], dtype=np.float32),
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("count == 3", True),
        ("count != 3", False),
        ("count >= 3 and score < 0.5", True),
        ("count > 3 or score <= 0.25", True),
        ("not count > 3", True),
        ("not (count > 3 or score > 1)", True),
        ("len(texts) == 3", True),
        ("len(texts) < count", False),
        ("len(query) == 1", True),  # an array's len is its element count
        ("len('abc') == 3", True),
        ('query == "hello there"', True),
        ("query != 'hello there'", False),
        ("query > 'a'", True),
        ("flag == true", True),
        ("flag", True),
        ("not flag", False),
        ("empty", False),
        ("texts", True),
        ("count == -3", False),
        ("score == 2.5e-1", True),
        ("1 < 2 and 'a' == \"a\"", True),
        ('"it\\"s" == \'it"s\'', True),
        ("false or true and false", False),  # and binds tighter than or
    ],
)
def test_evaluate(text, expected):
    assert parse_condition(text).evaluate(VALUES) is expected


def test_names_are_the_referenced_ports():
    cond = parse_condition("len(texts) > 2 and (query == 'x' or not flag) and 3 > 1")
    assert cond.names == {"texts", "query", "flag"}


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("count ==", 9, "expected a value"),
        ("count = 3", 7, "unexpected character '='"),
        ("(count > 3", 11, "expected ')'"),
        ("len count", 5, "expected '('"),
        ("1 < count < 3", 11, "chained"),
        ("", 1, "empty"),
        ("count > 3 3", 11, "unexpected '3'"),
        ("__import__('os')", 11, "unexpected '('"),
        ("'abc", 1, "unexpected character"),
        ("- x", 1, "'-' must be followed by a number"),
        ("'\\q' == x", 2, "unknown escape"),
    ],
)
def test_parse_errors_have_a_column(text, column, words):
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    assert info.value.column == column
    assert words in str(info.value)
    assert f"column {column}" in str(info.value)


TYPES = {
    "query": TensorSpec("BYTES", (1,)),
    "texts": TensorSpec("BYTES", (-1,)),
    "pair": TensorSpec("BYTES", (2,)),
    "count": TensorSpec("INT64", (1,)),
    "flag": TensorSpec("BOOL", (1,)),
}


@pytest.mark.parametrize(
    "text", ["query == 'x'", "count > 2", "len(pair) == 2", "flag == true", "count == flag"]
)
def test_well_typed_conditions(text):
    assert parse_condition(text).type_errors(TYPES) == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("query == 3", "cannot compare query (string) with 3 (number)"),
        ("count != 'x'", "cannot compare count (number) with 'x' (string)"),
        ("pair == 'x'", "pair has several elements"),
        ("flag < true", "does not order booleans"),
        ("len(3) > 1", "len() of a number"),
    ],
)
def test_type_errors(text, words):
    errors = parse_condition(text).type_errors(TYPES)
    assert len(errors) == 1
    assert words in str(errors[0])


def test_runtime_errors_name_the_input():
    with pytest.raises(ConditionError, match="'missing' is absent"):
        parse_condition("missing > 1").evaluate(VALUES)
    with pytest.raises(ConditionError, match="texts has 3 elements"):
        parse_condition("texts == 'a'").evaluate(VALUES)
    with pytest.raises(ConditionError, match="cannot compare"):
        parse_condition("query > 1").evaluate(VALUES)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1.'\"()<>=!- andortlenx_", max_size=30))
def test_any_text_parses_or_raises_a_condition_error(text):
    try:
        cond = parse_condition(text)
    except ConditionError as exc:
        assert 1 <= exc.column <= len(text) + 1
        return
    values = {name: np.array([1]) for name in cond.names}
    try:
        assert cond.evaluate(values) in (True, False)
    except ConditionError:
        pass  # e.g. comparing a string with a number


def test_len_of_a_fixed_shape_is_flagged_as_constant():
    cond = parse_condition("len(query) > 5 or len(texts) > 2 or len(pair) == 2")
    notes = cond.constant_lengths(TYPES)
    assert [(n.column, str(n).split(":")[0]) for n in notes] == [
        (1, "len(query) is always 1"),
        (37, "len(pair) is always 2"),
    ]
