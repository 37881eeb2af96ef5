"""Where a forwarder sends signed events: the seam between the spool and the ledger.

    EventSink (Protocol)
    ├── ledger.Ledger    appends in-process to the ledger's store (one host, SQLite)
    └── httpsink.HttpSink posts to `computeproof serve` over HTTPS (every host of a cluster)

Each reports, per envelope of a batch, what became of it (:class:`AppendResult`), so the
forwarder can remove from the spool exactly what the ledger holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class AppendResult:
    """What an append did, per envelope position in the batch."""

    accepted: list[tuple[int, str, int]] = field(default_factory=list)  # (pos, event id, leaf)
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (pos, reason)
    # signed by a key not enrolled (for that host): retry once the site enrolls it
    untrusted: list[tuple[int, str]] = field(default_factory=list)


class EventSink(Protocol):
    """Takes batches of signed DSSE envelopes (with the openings of their private fields)
    and says what became of each; raises a ReceiptError when it cannot be reached, so that
    everything stays in the spool."""

    def append(
        self,
        envelopes: Sequence[bytes],
        openings: Sequence[dict[str, dict[str, object]]] | None = None,
    ) -> AppendResult:
        """Append a batch; the result's positions index ``envelopes``."""
        ...
