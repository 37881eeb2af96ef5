"""The orjson fast path of the statement check never accepts what the exact path refuses."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof import envelope
from computeproof.canonical import MAX_SAFE_INTEGER, canonical_bytes
from computeproof.errors import CanonicalError

_scalars = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12)
    | st.booleans()
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
_ascii = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12)
_canonical_values = st.recursive(
    _safe_ints | _ascii | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ascii, inner, max_size=4),
    max_leaves=20,
)


def _exact(data: bytes) -> object:
    value = envelope._loads(data, "test")  # raises CanonicalError on floats, big ints
    if not envelope._is_canonical(value, data):
        raise CanonicalError("not canonical")
    return value


@settings(max_examples=400)
@given(_values)
def test_fast_path_accepts_only_what_the_exact_path_accepts(value: object) -> None:
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError):
        return  # orjson cannot write it (64-bit ints and beyond): nothing to check
    fast = envelope._loads_canonical(data)
    if fast is not None:
        assert _exact(data) == fast


@settings(max_examples=300)
@given(_canonical_values)
def test_fast_path_takes_canonical_ascii_statements(value: object) -> None:
    data = canonical_bytes(value)
    assert envelope._loads_canonical(data) == value


@pytest.mark.parametrize(
    "data",
    [b'{"a":1.5}', b'{"a":[1e23]}', b'{"a":[1,-0.0]}', b'{"a":1e-7,"b":1}', b'{"a":1.0}',
     b'{"a":9007199254740992}', b'{"b":1,"a":2}', b'{"a":1,"a":1}', b'{"a":"\\u00e9"}',
     b'{"a":"\\/"}', b'{"a":-0}', b'{"a":01}', b'{"a" :1}', b"1.5", b"[2.0]",
     b'{"a":18446744073709551616}', b'{"a":18446744073709551615}'],
)  # fmt: skip
def test_fast_path_refuses_non_canonical_text(data: bytes) -> None:
    assert envelope._loads_canonical(data) is None


def test_times_with_fractions_stay_on_the_fast_path() -> None:
    data = b'{"t":"2026-11-25T10:00:05.123456Z"}'
    assert envelope._loads_canonical(data) == {"t": "2026-11-25T10:00:05.123456Z"}


def test_a_string_that_looks_like_a_float_stays_on_the_fast_path() -> None:
    data = b'{"u":[":1.5}"]}'
    assert envelope._loads_canonical(data) == _exact(data) == {"u": [":1.5}"]}


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@settings(max_examples=1500)
@given(st.text(alphabet=_B64 + "=", max_size=12) | st.binary(max_size=9).map(
    lambda b: __import__("base64").b64encode(b).decode()))  # fmt: skip
def test_strict_base64_accepts_exactly_the_canonical_spelling(text: str) -> None:
    import base64
    import binascii

    try:
        canonical = base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except (binascii.Error, ValueError):
        canonical = False
    for form in (text, text.encode()):
        try:
            envelope.b64decode_strict(form, "x")
            accepted = True
        except CanonicalError:
            accepted = False
        assert accepted == canonical, (form, canonical)
