"""Tests of computeproof/privacy.py: salted commitments and their openings."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computeproof.canonical import MAX_SAFE_INTEGER, canonical_bytes
from computeproof.errors import ProofError
from computeproof.privacy import (
    COMMITMENT_KEY,
    check_opening,
    commit_fields,
    commitment,
    derived_salt,
    is_commitment,
)

PAYLOAD: dict[str, object] = {
    "user": "alice",
    "job_name": "train",
    "gpus": 4,
    "command": ["python", "train.py"],
}
SECRET = b"\x07" * 32


def test_commitment_known_answer() -> None:
    salt = bytes(range(32))
    assert commitment(salt, "alice") == hashlib.sha256(salt + b'"alice"').hexdigest()
    assert commitment(salt, {"b": 1, "a": [2]}) == (
        hashlib.sha256(salt + canonical_bytes({"a": [2], "b": 1})).hexdigest()
    )


def test_commit_fields_random_salts() -> None:
    before = dict(PAYLOAD)
    out, openings = commit_fields(PAYLOAD, ("user", "command", "absent"))
    assert before == PAYLOAD  # the input is not modified
    assert set(openings) == {"user", "command"}  # absent fields are skipped
    assert out["gpus"] == 4 and out["job_name"] == "train"
    for name in ("user", "command"):
        assert is_commitment(out[name])
        assert len(bytes.fromhex(str(openings[name]["salt"]))) == 32
        assert check_opening(out[name], openings[name]) == PAYLOAD[name]
    again, _ = commit_fields(PAYLOAD, ("user",))
    assert again["user"] != out["user"]  # fresh random salt each time


def test_commit_fields_derived_salts_are_deterministic() -> None:
    a, oa = commit_fields(PAYLOAD, ("user",), "event1", SECRET)
    b, ob = commit_fields(PAYLOAD, ("user",), "event1", SECRET)
    assert a == b and oa == ob
    assert oa["user"]["salt"] == derived_salt(SECRET, "event1", "user").hex()
    c, _ = commit_fields(PAYLOAD, ("user",), "event2", SECRET)
    d, _ = commit_fields(PAYLOAD, ("user",), "event1", b"\x08" * 32)
    assert c["user"] != a["user"] and d["user"] != a["user"]
    assert derived_salt(SECRET, "e", "user") != derived_salt(SECRET, "e", "job_name")


def test_no_private_fields_is_identity() -> None:
    out, openings = commit_fields(PAYLOAD, ())
    assert out is PAYLOAD and openings == {}


def test_is_commitment() -> None:
    assert is_commitment({COMMITMENT_KEY: "00"})
    assert not is_commitment({COMMITMENT_KEY: "00", "x": 1})
    assert not is_commitment("alice")
    assert not is_commitment(None)


@pytest.mark.parametrize(
    ("opening", "message"),
    [
        ({"salt": "00" * 32, "value": "alice"}, "does not match"),
        ({"value": "alice"}, "no salt"),
        ({"salt": 5, "value": "alice"}, "no salt"),
        ({"salt": "zz", "value": "alice"}, "not hex"),
        ({"salt": None, "value": "bob"}, "no salt"),
    ],
)
def test_check_opening_rejects(opening: dict[str, object], message: str) -> None:
    out, good = commit_fields({"user": "alice"}, ("user",), "e", SECRET)
    assert check_opening(out["user"], good["user"]) == "alice"
    with pytest.raises(ProofError, match=message):
        check_opening(out["user"], opening)


def test_check_opening_wrong_value_and_non_commitment() -> None:
    out, good = commit_fields({"user": "alice"}, ("user",), "e", SECRET)
    with pytest.raises(ProofError, match="does not match"):
        check_opening(out["user"], {**good["user"], "value": "bob"})
    with pytest.raises(ProofError, match="not a commitment"):
        check_opening("alice", good["user"])


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(_values, _values)
def test_opening_round_trip_and_binding(value: object, other: object) -> None:
    out, openings = commit_fields({"f": value}, ("f",))
    assert check_opening(out["f"], openings["f"]) == value
    if canonical_bytes(other) != canonical_bytes(value):
        with pytest.raises(ProofError):
            check_opening(out["f"], {**openings["f"], "value": other})
