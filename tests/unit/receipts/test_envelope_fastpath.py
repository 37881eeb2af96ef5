"""The orjson fast path of the statement check never accepts what the exact path refuses."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_hooks.errors import CanonicalError
from slurm_hooks.receipts import envelope
from slurm_hooks.receipts.canonical import MAX_SAFE_INTEGER, canonical_bytes

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
    data = canonical_bytes({"v": value})
    if envelope._FLOAT_TOKEN.search(data) is None:  # else a string looks like a float
        assert envelope._loads_canonical(data) == {"v": value}


@pytest.mark.parametrize(
    "data",
    [b'{"a":1.5}', b'{"a":[1e23]}', b'{"a":[1,-0.0]}', b'{"a":1e-7,"b":1}', b'{"a":1.0}',
     b'{"a":9007199254740992}', b'{"b":1,"a":2}', b'{"a":1,"a":1}', b'{"a":"\\u00e9"}',
     b'{"a":"\\/"}', b'{"a":-0}', b'{"a":01}', b'{"a" :1}'],
)  # fmt: skip
def test_fast_path_refuses_non_canonical_text(data: bytes) -> None:
    assert envelope._loads_canonical(data) is None


def test_times_with_fractions_stay_on_the_fast_path() -> None:
    data = b'{"t":"2026-11-25T10:00:05.123456Z"}'
    assert envelope._loads_canonical(data) == {"t": "2026-11-25T10:00:05.123456Z"}


def test_a_string_that_looks_like_a_float_takes_the_exact_path() -> None:
    data = b'{"u":[":1.5}"]}'
    assert envelope._loads_canonical(data) is None
    assert _exact(data) == {"u": [":1.5}"]}
