"""Ledger.append_stream: pipelined batches give exactly the log that sequential appends do."""

from __future__ import annotations

from pathlib import Path

from computeproof.ledger import Ledger
from computeproof.store.sqlite import SQLiteStore
from computeproof.synthetic import host_signers, signed_jobs


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


def test_pipelined_verify_finds_a_tampered_leaf_deep_in_the_log(tmp_path: Path) -> None:
    """`ledger verify` overlaps batches across workers; it still names the exact bad leaf."""
    import sqlite3

    envelopes = list(signed_jobs(1, 500, 3))
    assert len(envelopes) > 3000  # several verify batches of 2,048 leaves with 2 workers
    ledger = _ledger(tmp_path / "l.db", workers=2)
    for result in ledger.append_stream(
        (envelopes[i : i + 1000], None) for i in range(0, len(envelopes), 1000)
    ):
        assert not result.rejected
    ledger.checkpoint()
    report = ledger.verify()
    assert report.ok and report.signatures == len(envelopes)
    bad = 2500
    db = sqlite3.connect(tmp_path / "l.db")
    env = db.execute("SELECT envelope FROM leaves WHERE idx = ?", (bad,)).fetchone()[0]
    db.execute(
        "UPDATE leaves SET envelope = ? WHERE idx = ?",
        (env.replace(b'"sig":"', b'"sig":"A', 1), bad),
    )
    db.commit()
    db.close()
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == bad
    assert report.signatures == len(envelopes) - 1
    ledger.close()


def test_parallel_verify_workers_read_the_file_and_report_each_tampering(tmp_path: Path) -> None:
    """Workers read their own chunks of the file: a deleted row, a rewritten index column and
    two swapped envelopes are still each named at their leaf."""
    import sqlite3

    envelopes = list(signed_jobs(1, 400, 3))
    ledger = _ledger(tmp_path / "l.db", workers=2)
    for result in ledger.append_stream([(envelopes, None)]):
        assert not result.rejected
    ledger.checkpoint()
    assert ledger.store.reader_url() is not None
    db = sqlite3.connect(tmp_path / "l.db")
    db.execute("DELETE FROM leaves WHERE idx = 1700")
    db.execute("UPDATE leaves SET host = 'elsewhere' WHERE idx = 2100")
    a, b = (db.execute("SELECT envelope FROM leaves WHERE idx = ?", (i,)).fetchone()[0]
            for i in (2400, 2401))  # fmt: skip
    db.execute("UPDATE leaves SET envelope = ? WHERE idx = 2400", (b,))
    db.execute("UPDATE leaves SET envelope = ? WHERE idx = 2401", (a,))
    db.commit()
    db.close()
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 1700
    text = "\n".join(report.problems)
    assert "rows are missing" in text
    assert "leaf 2100: index columns do not match the signed event" in text
    assert "leaf 2401: index columns do not match the signed event" in text
    assert {1700, 2100, 2400, 2401} <= set(report.bad_leaves)
    ledger.close()
