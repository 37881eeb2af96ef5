"""Tests of computeproof/canonical.py: RFC 8785 vectors, escapes, ordering, limits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.canonical import (
    MAX_SAFE_INTEGER,
    canonical_bytes,
    canonical_bytes_fast,
    canonical_str,
    loads,
)
from computeproof.errors import CanonicalError

VECTORS = Path(__file__).resolve().parents[2] / "data" / "rfc8785"


def _vector(name: str) -> tuple[object, bytes]:
    return (
        json.loads((VECTORS / "input" / f"{name}.json").read_text("utf-8")),
        (VECTORS / "output" / f"{name}.json").read_bytes(),
    )


@pytest.mark.parametrize("name", ["arrays", "french", "unicode", "weird"])
def test_rfc8785_vectors(name: str) -> None:
    value, expected = _vector(name)
    assert canonical_bytes(value) == expected


def test_rfc8785_structures_with_integral_floats_as_ints() -> None:
    # the only number there is 56.0, which JCS writes as 56 (our encoder takes ints only)
    value = json.loads(
        (VECTORS / "input" / "structures.json").read_text("utf-8"),
        parse_float=lambda s: int(float(s)),
    )
    assert canonical_bytes(value) == (VECTORS / "output" / "structures.json").read_bytes()


def test_rfc8785_values_example_without_floats() -> None:
    value, expected = _vector("values")
    assert isinstance(value, dict)
    with pytest.raises(CanonicalError, match="float"):
        canonical_bytes(value)
    del value["numbers"]
    assert canonical_bytes(value) == re.sub(rb'"numbers":\[[^\]]*\],', b"", expected)
    assert canonical_bytes(value) == (
        b'{"literals":[null,true,false],"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )


def test_rfc8785_sorting_example_section_3_2_3() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_str(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_astral_keys_sort_by_utf16_code_units_not_code_points() -> None:
    value = {"\ufb01": 1, "\U0001f600": 2, "\uffff": 3, "\ue000": 4}
    # U+1F600 is D83D DE00 in UTF-16: before U+E000, U+FB01 and U+FFFF
    assert canonical_str(value) == '{"\U0001f600":2,"\ue000":4,"\ufb01":1,"\uffff":3}'
    # json.dumps sorts by code point and so differs: the reason for a dedicated encoder
    assert json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) != (
        canonical_str(value)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ('"\\', '"\\"\\\\"'),
        ("/", '"/"'),  # solidus is not escaped
        ("\x7f", '"\x7f"'),  # DEL is not a control character for JSON
        ("\u00e9\u2028\U0001f600", '"\u00e9\u2028\U0001f600"'),  # raw UTF-8, no \u escapes
        ("\x0b", '"\\u000b"'),  # lowercase hex
    ],
)
def test_string_escapes(text: str, expected: str) -> None:
    assert canonical_str(text) == expected
    assert canonical_str({text: text}) == "{" + expected + ":" + expected + "}"


def test_literals_nesting_and_tuples() -> None:
    value = {"b": [1, (2, 3), {"z": None, "a": True}], "a": False, "": {}}
    assert canonical_bytes(value) == b'{"":{},"a":false,"b":[1,[2,3],{"a":true,"z":null}]}'
    assert canonical_str([]) == "[]"
    assert canonical_str(True) == "true"  # bool is not written as an int
    assert canonical_str(-0) == "0"


def test_integer_range() -> None:
    assert canonical_str(MAX_SAFE_INTEGER) == "9007199254740991"
    assert canonical_str(-MAX_SAFE_INTEGER) == "-9007199254740991"
    for bad in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30):
        with pytest.raises(CanonicalError, match="I-JSON"):
            canonical_bytes({"n": [bad]})


@pytest.mark.parametrize("bad", [1.0, 0.5, float("nan"), float("inf"), -0.0])
def test_floats_refused(bad: float) -> None:
    with pytest.raises(CanonicalError, match="float"):
        canonical_bytes({"metrics": {"x": bad}})


@pytest.mark.parametrize("bad", [b"bytes", {1, 2}, object(), 1j])
def test_other_types_refused(bad: object) -> None:
    with pytest.raises(CanonicalError, match="cannot be written"):
        canonical_bytes([bad])


@pytest.mark.parametrize("bad", [{1: "a"}, {None: 1}, {("a",): 1}, {b"k": 1}])
def test_non_string_keys_refused(bad: dict[object, object]) -> None:
    with pytest.raises(CanonicalError, match="keys must be strings"):
        canonical_bytes(bad)


def test_lone_surrogate_refused() -> None:
    with pytest.raises(CanonicalError, match="surrogate"):
        canonical_bytes({"a": "\ud800"})
    with pytest.raises(CanonicalError):
        canonical_bytes({"\udfff": 1})


# -- properties --------------------------------------------------------------------------

_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
_bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=8)
_scalars = st.none() | st.booleans() | _ints | st.text(max_size=12)


def _json(keys: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    return st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


@settings(max_examples=100, deadline=None)
@given(_json(_bmp_keys))
def test_matches_json_dumps_for_bmp_keys(value: object) -> None:
    fast = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_str(value) == fast
    assert canonical_bytes(value) == fast.encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(_json(st.text(max_size=6)))
def test_round_trip_and_utf16_key_order(value: object) -> None:
    text = canonical_str(value)
    assert json.loads(text) == value

    def check(pairs: list[tuple[str, object]]) -> object:
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys, key=lambda k: k.encode("utf-16-be"))
        return pairs

    json.loads(text, object_pairs_hook=check)


@settings(max_examples=50, deadline=None)
@given(_json(_bmp_keys))
def test_canonical_form_is_a_fixed_point(value: object) -> None:
    once = canonical_bytes(value)
    assert canonical_bytes(json.loads(once)) == once


# -- canonical_bytes_fast: json's C encoder, proved against the reference ---------------


def _outcome(encode: object, value: object) -> object:
    try:
        return encode(value)  # type: ignore[operator]
    except CanonicalError as e:
        return ("error", str(e))
    except RecursionError:
        return "recursion"


def test_fast_escapes_every_code_point_as_the_reference() -> None:
    """json's C string escapes against the reference's, for every code point but the
    surrogates, and each surrogate alone (refused by both)."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert canonical_bytes_fast({"s": every}) == canonical_bytes({"s": every})
    for c in range(0x20):
        assert canonical_bytes_fast([chr(c)]) == canonical_bytes([chr(c)])
    for c in range(0xD800, 0xE000, 0x7F):
        assert _outcome(canonical_bytes_fast, [chr(c)]) == _outcome(canonical_bytes, [chr(c)])


class _Odd(int):
    def __str__(self) -> str:
        return "odd"


@pytest.mark.parametrize(
    "value",
    [
        {"metrics": {"x": 1.0}},
        {"x": float("nan")},
        {"x": float("inf")},
        [-0.0],
        {"n": [MAX_SAFE_INTEGER + 1]},
        {"n": -MAX_SAFE_INTEGER - 1},
        {"n": MAX_SAFE_INTEGER},
        {1: "a"},
        {None: 1},
        {True: 1},
        {1.5: 1},
        {1: "a", "1": "b"},
        {("a",): 1},
        {b"k": 1},
        [b"bytes"],
        [{1, 2}],
        [object()],
        [1j],
        {"a": "\ud800"},
        {"\udfff": 1},
        {"b": [1, (2, 3), {"z": None, "a": True}], "a": False, "": {}},
        (1, [2]),
        {"\ue000": 1, "\U00010000": 2, "a": 3},
        {"\uffff": [1], "\U0001f600": [2]},
        [_Odd(7)],
        {"k": _Odd(-3)},
        "x",
        5,
        None,
        True,
        [],
    ],
)
def test_fast_gives_the_references_bytes_or_its_error(value: object) -> None:
    assert _outcome(canonical_bytes_fast, value) == _outcome(canonical_bytes, value)


def test_fast_deep_nesting_is_the_references_outcome() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert _outcome(canonical_bytes_fast, deep) == _outcome(canonical_bytes, deep)


_any_keys = st.text(max_size=6) | st.sampled_from(["\ue000", "\U00010000", "\uffff", "a"])
_hostile_text = st.text(max_size=12) | st.binary(max_size=12).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | _hostile_text
        | st.floats(allow_nan=True, allow_infinity=True),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(_any_keys | st.integers() | st.none(), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_fast_matches_the_reference_on_anything(value: object) -> None:
    """Any value (floats, huge ints, non-string keys, lone surrogates, astral and
    private-use keys, tuples): the fast path's bytes, or error, are the reference's."""
    assert _outcome(canonical_bytes_fast, value) == _outcome(canonical_bytes, value)


# -- loads: json.loads with the C scanner alone (the Epilog parses the agent's answer) --


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        _scalars | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=20,
    ),
    st.sampled_from(["", " ", "\n", " \t\r\n"]),
    st.sampled_from([None, 2]),
)
def test_loads_agrees_with_json_loads(value: object, space: str, indent: int | None) -> None:
    text = space + json.dumps(value, indent=indent) + space
    assert loads(text.encode("utf-8")) == json.loads(text)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (b"", "no JSON value at character 0"),
        (b"  ", "no JSON value at character 2"),
        (b'{"a": 1} x', "text after the JSON value at character 8"),
        (b"[1] [2]", "text after the JSON value"),
        (b'{"a": ', "no JSON value"),
        (b"NaN", "NaN is not a JSON value"),
        (b"[-Infinity]", "-Infinity is not a JSON value"),
        (b'{"a": "\x01"}', "Invalid control character"),
        (b'"\xff"', "utf-8"),
        (b"{'a': 1}", "Expecting property name"),
    ],
)
def test_loads_refuses_what_is_not_json(bad: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        loads(bad)
