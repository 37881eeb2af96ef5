"""Ledger.append_stream: pipelined batches give exactly the log that sequential appends do."""

from __future__ import annotations

from pathlib import Path

from slurm_hooks.receipts.ledger import Ledger
from slurm_hooks.receipts.store.sqlite import SQLiteStore
from slurm_hooks.receipts.synthetic import host_signers, signed_jobs


def _ledger(path: Path, workers: int) -> Ledger:
    ledger = Ledger(SQLiteStore(str(path)), "test.stream", str(path) + ".key", workers=workers)
    for host, signer in host_signers(3).items():
        ledger.enroll(signer.public_raw, [host])
    return ledger


def test_stream_matches_sequential_appends(tmp_path: Path) -> None:
    envelopes = list(signed_jobs(1, 120, 3))
    batches = [envelopes[i : i + 300] for i in range(0, len(envelopes), 300)]
    seq = _ledger(tmp_path / "seq.db", workers=1)
    for b in batches:
        assert not seq.append(b).rejected
    stream = _ledger(tmp_path / "stream.db", workers=2)
    results = list(stream.append_stream((b, None) for b in batches))
    assert len(results) == len(batches)
    assert sum(len(r.accepted) for r in results) == len(envelopes)
    assert stream.size() == seq.size() == len(envelopes)
    assert stream.root() == seq.root()
    assert stream.verify().ok
    seq.close()
    stream.close()


def test_stream_dedupes_across_batches(tmp_path: Path) -> None:
    envelopes = list(signed_jobs(1, 40, 3))
    ledger = _ledger(tmp_path / "l.db", workers=2)
    half = len(envelopes) // 2
    batches = [(envelopes[:half], None), (envelopes[half // 2 :], None)]  # overlap re-sent
    first, second = ledger.append_stream(batches)
    assert len(first.accepted) == half
    assert len(second.duplicates) == half - half // 2
    assert len(second.accepted) == len(envelopes) - half
    assert ledger.size() == len(envelopes)
    ledger.close()
