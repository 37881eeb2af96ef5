"""Helpers of the anchoring tests, in a plain module: `from conftest import ...` would take
whichever conftest.py the session imported last."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from computeproof.envelope import sign_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger

ORIGIN = "computeproof.test.ledger"


def add_job(
    led: Ledger, signer: Signer, lifecycle: Callable[..., list[dict[str, Any]]], job: str
) -> None:
    """Append one more job's events."""
    envs = [sign_event(e, signer) for e in lifecycle(job)]
    assert len(led.append(envs).accepted) == len(envs)
