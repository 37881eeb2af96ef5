"""Anchoring on a schedule: the registry the configuration names (``anchor_target`` and
its keys in conf/config.toml), and one anchor per ``anchor_interval`` for a ledger however
many processes serve it.

The collector (`computeproof serve`) runs :meth:`PeriodicAnchoring.due_anchor` from a
thread of its own; each collector process sharing a ledger key does, and the decision
whether an anchor is due is taken under a lock file beside that key, against the anchors
the ledger already holds, so a checkpoint is paid for once an interval, not once a
process.
"""

from __future__ import annotations

import time
from typing import Any

from computeproof.anchors import (
    AnchoredCheckpoint,
    Anchorer,
    AnchorRecord,
    anchor_checkpoint,
    anchors_of,
    ledger_checkpoint,
)
from computeproof.config import Config
from computeproof.errors import AnchorError, ConfigError
from computeproof.event import utc_epoch
from computeproof.filelock import exclusive
from computeproof.ledger import Ledger

TARGETS = ("evm", "numbers")


def check_anchor_config(config: Config) -> None:
    """ConfigError naming what is missing when anchoring is configured incompletely
    (nothing is contacted: :func:`configured_anchorer` connects)."""
    target = config.anchor_target
    if not target:
        return
    if target not in TARGETS:
        raise ConfigError(
            f"anchor_target {target[:40]!r} is not one of {', '.join(TARGETS)} "
            "(empty: no periodic anchoring)"
        )
    if config.anchor_interval < 1:
        raise ConfigError("anchor_interval must be at least 1 second")
    if target == "evm":
        missing = [
            name
            for name in ("anchor_rpc_url", "anchor_contract", "anchor_key")
            if not getattr(config, name)
        ]
        if missing:
            raise ConfigError(f'anchor_target = "evm" needs {", ".join(missing)} in the config')
    elif not config.anchor_capture_token_file:
        raise ConfigError(
            'anchor_target = "numbers" needs anchor_capture_token_file (a file holding the '
            "Capture API token, mode 0600)"
        )


def configured_anchorer(config: Config) -> Any:
    """The anchorer ``config`` names (connected), or None when anchoring is not configured.
    ConfigError or AnchorError, one line, when it cannot be built."""
    check_anchor_config(config)
    if config.anchor_target == "evm":
        from computeproof.anchors.evm import EvmAnchorer, connect, load_account

        return EvmAnchorer(
            connect(config.anchor_rpc_url),
            config.anchor_contract,
            load_account(config.anchor_key),
            config.anchor_asset_cid or None,
            config.anchor_chain_id or None,
        )
    if config.anchor_target == "numbers":
        from computeproof.anchors.numbers import (
            API_URL,
            HISTORY_URL,
            CaptureClient,
            NumbersAnchorer,
        )

        path = config.anchor_capture_token_file
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise AnchorError(f"cannot read the Capture token file {path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise AnchorError(f"the Capture token file {path} is not text") from e
        client = CaptureClient(
            token, config.anchor_capture_api or API_URL, config.anchor_history_url or HISTORY_URL
        )
        return NumbersAnchorer(client, config.anchor_scope)
    return None


class PeriodicAnchoring:
    """Anchor a ledger's newest checkpoint with ``anchorer`` at most once an ``interval``
    (seconds), and only when the log grew since the last anchor in that registry."""

    def __init__(self, anchorer: Anchorer, interval: float, lock_path: str) -> None:
        self.anchorer = anchorer
        self.interval = interval
        self.lock_path = lock_path

    def last(self, ledger: Ledger) -> AnchorRecord | None:
        """This registry's newest anchor of the ledger."""
        previous = anchors_of(ledger, self.anchorer.kind, self.anchorer.target)
        return previous[-1] if previous else None

    def wait_s(self, ledger: Ledger) -> float:
        """Seconds until an anchor may be due (0: now)."""
        last = self.last(ledger)
        at = None if last is None else utc_epoch(last.anchored_at)
        if at is None:
            return 0.0
        return max(0.0, at + self.interval - time.time())

    def due_anchor(self, ledger: Ledger) -> AnchorRecord | None:
        """Anchor the newest checkpoint if the interval since this registry's last anchor
        has passed and the checkpoint is newer; the new record, or None (not due, or
        nothing new). Decided under the lock, so processes sharing the ledger anchor once."""
        with exclusive(self.lock_path, AnchorError):
            if self.wait_s(ledger) > 0:
                return None
            cp: AnchoredCheckpoint = ledger_checkpoint(ledger)
            last = self.last(ledger)
            if last is not None and last.size >= cp.size:
                return None  # the log did not grow: nothing new to pay for
            record, fresh = anchor_checkpoint(ledger, self.anchorer)
            return record if fresh else None

    def close(self) -> None:
        """Release the anchorer's connections (the Capture API client's pool)."""
        client = getattr(self.anchorer, "client", None)
        if client is not None and hasattr(client, "close"):
            client.close()
