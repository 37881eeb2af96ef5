"""Periodic anchoring (computeproof/anchors/periodic.py) on the dev chain: due once an
interval and only when the log grew, decided under a lock so processes sharing a ledger
pay once; the registry the configuration names."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from anchorjobs import ORIGIN, add_job

from computeproof.anchors import AnchoredCheckpoint, AnchorRecord, anchors_of
from computeproof.anchors.devchain import DevChainInfo
from computeproof.anchors.evm import EvmAnchorer
from computeproof.anchors.periodic import PeriodicAnchoring, configured_anchorer
from computeproof.config import Config
from computeproof.errors import AnchorError, ConfigError
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore


class Slow:
    """The dev chain's anchorer, slowed so that concurrent decisions overlap."""

    def __init__(self, inner: EvmAnchorer, delay: float) -> None:
        self.inner, self.delay, self.kind = inner, delay, inner.kind

    @property
    def target(self) -> str:
        return self.inner.target

    def anchor(self, cp: AnchoredCheckpoint, previous: Sequence[AnchorRecord]) -> AnchorRecord:
        time.sleep(self.delay)
        return self.inner.anchor(cp, previous)


def reopen(filled: Ledger, tmp_path: Path) -> Ledger:
    return Ledger(SQLiteStore(os.path.join(tmp_path, "ledger.db")), ORIGIN,
                  os.path.join(tmp_path, "ledger.key"), workers=1)  # fmt: skip


def test_due_once_an_interval_and_only_when_the_log_grew(
    filled: Ledger,
    evm_anchorer: EvmAnchorer,
    tmp_path: Path,
    host_signer: Signer,
    make_lifecycle: Callable[..., Any],
) -> None:
    periodic = PeriodicAnchoring(evm_anchorer, 1.0, str(tmp_path / "anchor.lock"))
    first = periodic.due_anchor(filled)
    assert first is not None and first.size == filled.size()
    assert periodic.due_anchor(filled) is None and periodic.wait_s(filled) > 0  # too soon
    time.sleep(periodic.wait_s(filled) + 0.05)
    assert periodic.due_anchor(filled) is None  # due, but the log did not grow
    add_job(filled, host_signer, make_lifecycle, "102")
    second = periodic.due_anchor(filled)
    assert second is not None and second.size == filled.size() > first.size
    assert [r.size for r in anchors_of(filled)] == [first.size, second.size]


def test_processes_sharing_a_ledger_pay_once(
    filled: Ledger, evm_anchorer: EvmAnchorer, tmp_path: Path
) -> None:
    """Four deciders, each with its own ledger connection and lock descriptor (as four
    processes have), all due at once: one anchors. Without the lock all four would."""
    filled.checkpoint()
    lock = str(tmp_path / "anchor.lock")
    barrier = threading.Barrier(4)
    made: list[AnchorRecord | Exception | None] = []

    def decide() -> None:
        led = reopen(filled, tmp_path)
        try:
            own = EvmAnchorer(evm_anchorer.w3, evm_anchorer.contract, evm_anchorer.account)
            periodic = PeriodicAnchoring(Slow(own, 0.3), 60.0, lock)
            barrier.wait()
            made.append(periodic.due_anchor(led))
        except Exception as e:  # the chain refusing a second payer's nonce, say
            made.append(e)
        finally:
            led.close()

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(made) == 4 and not [m for m in made if isinstance(m, Exception)], made
    assert len([m for m in made if m is not None]) == 1, made
    assert len(anchors_of(filled)) == 1


def test_the_configured_registry(devchain: DevChainInfo, tmp_path: Path) -> None:
    base = Config(anchor_target="evm", anchor_rpc_url=devchain.rpc_url,
                  anchor_contract=devchain.contract, anchor_key=devchain.key_file)  # fmt: skip
    assert configured_anchorer(Config()) is None  # unconfigured: no anchoring
    anchorer = configured_anchorer(dataclasses.replace(base, anchor_chain_id=devchain.chain_id))
    assert anchorer.kind == "evm" and devchain.contract.lower() in anchorer.target.lower()
    with pytest.raises(AnchorError, match="not chain"):
        configured_anchorer(dataclasses.replace(base, anchor_chain_id=devchain.chain_id + 1))
    with pytest.raises(ConfigError, match="anchor_contract"):
        configured_anchorer(dataclasses.replace(base, anchor_contract=""))
    token = tmp_path / "capture.token"
    token.write_text("t0ken\n")
    numbers = configured_anchorer(
        Config(
            anchor_target="numbers",
            anchor_capture_token_file=str(token),
            anchor_capture_api="http://127.0.0.1:9/api/v3",
            anchor_scope="month",
        )
    )
    assert (numbers.kind, numbers.scope) == ("numbers", "month")
    assert numbers.target == "numbers:http://127.0.0.1:9/api/v3"
    numbers.client.close()
    with pytest.raises(AnchorError, match="cannot read the Capture token file"):
        configured_anchorer(Config(anchor_target="numbers",
                                   anchor_capture_token_file=str(tmp_path / "none")))  # fmt: skip
