"""Contract tests of the Store interface (computeproof/store/interface.py).

A backend's test module subclasses :class:`StoreContract` and provides a ``make_store``
fixture: a callable ``make_store(name="main")`` that opens a store, the same storage each
time it is called with the same name, empty the first time (test_store_sqlite.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from computeproof import merkle
from computeproof.errors import StoreConflict, StoreError
from computeproof.store.interface import (
    AnchorRow,
    CheckpointRow,
    EnrolledKey,
    JobCursor,
    JobFacets,
    JobFilter,
    JobRow,
    LeafRow,
    Store,
    UsageFilter,
)

MakeStore = Callable[..., Store]


def _leaves(start: int, n: int, job: str = "c1/1#0") -> list[LeafRow]:
    return [
        LeafRow(
            i,
            hashlib.sha256(b"event %d" % i).hexdigest(),
            job,
            "progress",
            f"node{i % 2}",
            f"2026-01-01T00:00:{i:02d}Z",
            b'{"envelope":%d}' % i,
        )
        for i in range(start, start + n)
    ]


def _append(
    store: Store,
    n: int,
    job: str = "c1/1#0",
    jobs: list[JobRow] | None = None,
    openings: list[tuple[str, str, str, str]] | None = None,
) -> list[LeafRow]:
    """Append ``n`` leaves with their correct Merkle nodes."""
    start = store.size()
    keys = merkle.frontier_keys(start)
    have = store.read_nodes(keys)
    rows = _leaves(start, n, job)
    nodes, _ = merkle.nodes_to_store(
        start, [merkle.leaf_hash(r.envelope) for r in rows], [have[k] for k in keys]
    )
    store.append(start, rows, nodes, jobs or [], openings or [])
    return rows


def _job(key: str = "c1/1#0", **kw: object) -> JobRow:
    cluster, rest = key.split("/")
    job, run = rest.split("#")
    return JobRow(key, cluster, job, int(job.split("_")[0]), int(run), **kw)  # type: ignore[arg-type]


class StoreContract:
    """Behaviour every Store backend must have."""

    def test_empty(self, make_store: MakeStore) -> None:
        s = make_store()
        assert s.size() == 0
        assert s.leaf_count_rows() == (0, -1, -1)
        assert dict(s.read_nodes([(0, 0), (3, 1)])) == {}
        assert dict(s.read_nodes([])) == {}
        assert s.find_events([("c1/1#0", "x" * 64)]) == {}
        assert list(s.leaves()) == []
        assert list(s.nodes_at_level(0)) == []
        assert s.job_leaves("c1/1#0") == []
        assert s.jobs(JobFilter()) == []
        assert s.get_jobs(["c1/1#0"]) == {}
        assert s.openings("x") == {}
        assert s.checkpoints() == []
        assert s.enrolled() == {}
        assert s.get_meta("origin") is None

    def test_meta(self, make_store: MakeStore) -> None:
        s = make_store()
        s.set_meta("origin", "a")
        s.set_meta("origin", "b")
        s.set_meta("other", "c")
        assert s.get_meta("origin") == "b" and s.get_meta("other") == "c"

    def test_append_and_read_back(self, make_store: MakeStore) -> None:
        s = make_store()
        first = _append(s, 5)
        second = _append(s, 3, job="c1/2#0")
        rows = first + second
        assert s.size() == 8
        assert s.leaf_count_rows() == (8, 0, 7)
        assert list(s.leaves()) == rows
        assert list(s.leaves(2, 5)) == rows[2:5]
        assert list(s.leaves(6)) == rows[6:]
        assert list(s.leaves(8)) == [] and list(s.leaves(3, 3)) == []
        assert s.job_leaves("c1/2#0") == second
        pairs = [(r.job_key, r.event_id) for r in (rows[1], rows[7])]
        # an unknown id, and a known id under another job key: neither is in the log
        pairs += [("c1/1#0", "f" * 64), ("c1/2#0", rows[1].event_id)]
        assert s.find_events(pairs) == {
            rows[1].event_id: (1, rows[1].envelope),
            rows[7].event_id: (7, rows[7].envelope),
        }
        # the stored nodes are those of the RFC 9162 tree over the leaf hashes
        hashes = [merkle.leaf_hash(r.envelope) for r in rows]
        nodes = s.read_nodes([(0, 3), (1, 2), (3, 0), (2, 1), (4, 0)])
        assert nodes[(0, 3)] == hashes[3]
        assert nodes[(1, 2)] == merkle.node_hash(hashes[4], hashes[5])
        assert nodes[(3, 0)] == merkle.root_from_leaf_hashes(hashes)
        assert (4, 0) not in nodes
        assert [i for i, _ in s.nodes_at_level(0)] == list(range(8))
        assert dict(s.nodes_at_level(2)) == {
            0: merkle.root_from_leaf_hashes(hashes[:4]),
            1: merkle.root_from_leaf_hashes(hashes[4:]),
        }
        assert nodes[(2, 1)] == merkle.root_from_leaf_hashes(hashes[4:])
        assert merkle.root(8, s.read_nodes) == merkle.root_from_leaf_hashes(hashes)

    def test_snapshot_holds_still_while_another_writer_appends(self, make_store: MakeStore) -> None:
        reader, writer = make_store(), make_store()  # two connections to one log
        first = _append(writer, 3)
        with reader.snapshot():
            assert reader.size() == 3
            _append(writer, 2, job="c1/2#0")
            assert reader.size() == 3 and reader.leaf_count_rows() == (3, 0, 2)
            assert [i for i, _ in reader.nodes_at_level(0)] == [0, 1, 2]
            assert list(reader.leaves()) == first and reader.job_leaves("c1/2#0") == []
            with reader.snapshot():  # a snapshot inside one is the same snapshot
                assert reader.size() == 3
            assert reader.size() == 3
        assert reader.size() == 5 and len(reader.job_leaves("c1/2#0")) == 2

    def test_read_nodes_many_keys(self, make_store: MakeStore) -> None:
        s = make_store()
        _append(s, 600)
        keys = [(0, i) for i in range(600)]
        got = s.read_nodes(keys)
        assert len(got) == 600  # more keys than one SQL statement's chunk

    def test_find_events_many_ids(self, make_store: MakeStore) -> None:
        s = make_store()
        rows = _append(s, 700)
        found = s.find_events([(r.job_key, r.event_id) for r in rows])
        assert len(found) == 700 and found[rows[650].event_id][0] == 650

    def test_append_wrong_expected_size_changes_nothing(self, make_store: MakeStore) -> None:
        s = make_store()
        _append(s, 3, jobs=[_job(events=3)], openings=[("e0", "user", "00", '"alice"')])
        before = (list(s.leaves()), list(s.nodes_at_level(0)), s.get_jobs(["c1/1#0"]))
        extra = _leaves(3, 2)
        for expected in (0, 2, 4):
            with pytest.raises(StoreConflict):
                s.append(
                    expected,
                    extra,
                    [((0, 3), b"\x00" * 32)],
                    [_job(events=99), _job("c1/9#0")],
                    [("e0", "user", "11", '"mallory"'), ("e9", "f", "22", "1")],
                )
        assert (list(s.leaves()), list(s.nodes_at_level(0)), s.get_jobs(["c1/1#0"])) == before
        assert s.get_jobs(["c1/9#0"]) == {}
        assert s.openings("e0") == {"user": ("00", '"alice"')} and s.openings("e9") == {}
        assert s.size() == 3

    def test_append_is_atomic_on_duplicate_event_id(self, make_store: MakeStore) -> None:
        s = make_store()
        rows = _append(s, 2)
        dup = LeafRow(3, rows[0].event_id, "c1/1#0", "progress", "n", "t", b"x")
        new = _leaves(2, 1)[0]
        with pytest.raises(StoreError):
            s.append(
                2, [new, dup], [((0, 2), b"\x01" * 32)], [_job("c1/5#0")], [("e", "f", "s", "1")]
            )
        assert s.size() == 2 and s.find_events([(new.job_key, new.event_id)]) == {}
        assert s.read_nodes([(0, 2)]) == {} and s.get_jobs(["c1/5#0"]) == {}
        assert s.openings("e") == {}

    def test_job_rows_round_trip(self, make_store: MakeStore) -> None:
        s = make_store()
        full = _job(
            "c1/100_4#1",
            user="alice",
            account="physics",
            partition="gpu",
            state="COMPLETED",
            gpus=4,
            gpu_model="a100",
            nodes="node1,node2",
            submit="2026-01-01T09:00:00",
            start="2026-01-01T10:00:00",
            end="2026-01-01T11:00:00",
            elapsed_s=3600,
            exit_code="0:0",
            synthetic=True,
            events=7,
            first_leaf=0,
            last_leaf=6,
            fields={"gpu_totals": {"busy_gpu_ms": 5}, "_rank": 3, "list": [1, "a"]},
        )
        bare = _job("c1/7#0")
        _append(s, 1, jobs=[full, bare])
        assert s.get_jobs([full.job_key, bare.job_key, "c1/none#0"]) == {
            full.job_key: full,
            bare.job_key: bare,
        }
        # a later append replaces the row
        full.state, full.events = "FAILED", 8
        _append(s, 1, jobs=[full])
        assert s.get_jobs([full.job_key])[full.job_key] == full

    def test_jobs_filter(self, make_store: MakeStore) -> None:
        s = make_store()
        rows = [
            _job(
                "c1/1#0",
                user="alice",
                account="a",
                state="COMPLETED",
                nodes="node1",
                start="2026-01-01T10:00:00",
                end="2026-01-01T11:00:00",
                gpu_model="a100",
                partition="gpu",
            ),
            _job(
                "c1/2#0",
                user="bob",
                account="b",
                state="FAILED",
                nodes="node10,node2",
                start="2026-01-02T10:00:00",
                end="2026-01-02T11:00:00",
                partition="cpu",
            ),
            _job(
                "c1/3#0",
                user="alice",
                account="b",
                state="RUNNING",
                nodes="node2",
                start="2026-01-03T10:00:00",
            ),
            _job("c2/1#1", user="carol", submit="2026-01-04T00:00:00"),
        ]
        _append(s, 1, jobs=rows)

        def keys(**kw: object) -> list[str]:
            return [r.job_key for r in s.jobs(JobFilter(**kw))]  # type: ignore[arg-type]

        assert keys() == ["c1/1#0", "c1/2#0", "c1/3#0", "c2/1#1"]  # by start, then submit
        assert keys(users=("alice",)) == ["c1/1#0", "c1/3#0"]
        assert keys(accounts=("b",), states=("FAILED", "RUNNING")) == ["c1/2#0", "c1/3#0"]
        assert keys(partitions=("gpu",), gpu_models=("a100",)) == ["c1/1#0"]
        assert keys(nodes=("node1",)) == ["c1/1#0"]  # not node10
        assert keys(nodes=("node2",)) == ["c1/2#0", "c1/3#0"]
        assert keys(since="2026-01-02T10:30:00") == ["c1/2#0", "c1/3#0", "c2/1#1"]
        assert keys(until="2026-01-02T00:00:00") == ["c1/1#0", "c2/1#1"]
        assert keys(job="1") == ["c1/1#0", "c2/1#1"]
        assert keys(job="c2/1#1") == ["c2/1#1"]
        assert keys(job="\u00b2") == keys(job="\u0661") == []  # digits, but not ASCII ones
        assert keys(limit=2) == ["c1/1#0", "c1/2#0"]

    def test_jobs_page_walks_every_row_once_in_order(self, make_store: MakeStore) -> None:
        s = make_store()
        rows = [
            _job(
                f"c1/{i}#0",
                user=("alice", "bob")[i % 2],
                state=("COMPLETED", "FAILED")[i % 3 == 0],
                start=None if i % 7 == 0 else f"2026-01-{1 + i % 5:02d}T10:00:00",
                submit=f"2026-01-0{1 + i % 3}T09:00:00" if i % 7 == 0 and i % 2 else None,
            )
            for i in range(1, 60)
        ]
        rows.append(_job("c2/5#1", user="alice", start="2026-01-03T10:00:00"))  # ties on start
        _append(s, 1, jobs=rows)

        def order(r: JobRow) -> tuple[str, int, str]:
            return (r.start or r.submit or "", r.job_id, r.job_key)

        for selection in (JobFilter(), JobFilter(users=("alice",)), JobFilter(states=("FAILED",))):
            want = sorted(
                (
                    r
                    for r in rows
                    if (not selection.users or r.user in selection.users)
                    and (not selection.states or r.state in selection.states)
                ),
                key=order,
            )
            for newest_first in (True, False):
                got: list[JobRow] = []
                cursor = None
                for _ in range(100):  # bounded: 7 rows a page
                    page = s.jobs_page(selection, cursor, 7, newest_first=newest_first)
                    assert len(page) <= 7
                    got.extend(page)
                    if len(page) < 7:
                        break
                    cursor = JobCursor.of(page[-1])
                expect = list(reversed(want)) if newest_first else want
                assert [r.job_key for r in got] == [r.job_key for r in expect]
            assert s.count_jobs(selection) == len(want)
            assert s.count_jobs(selection, cap=3) == min(3, len(want))
        # a cursor in the middle: strictly after it, in both directions
        mid = sorted(rows, key=order)[30]
        after = s.jobs_page(JobFilter(), JobCursor.of(mid), 100)
        assert all(order(r) < order(mid) for r in after) and len(after) == 30
        before = s.jobs_page(JobFilter(), JobCursor.of(mid), 100, newest_first=False)
        assert all(order(r) > order(mid) for r in before) and len(before) == len(rows) - 31
        assert s.jobs_page(JobFilter(), None, 0) == []

    def test_job_facets(self, make_store: MakeStore) -> None:
        s = make_store()
        assert s.job_facets(JobFilter()) == JobFacets()
        _append(
            s,
            1,
            jobs=[
                _job(
                    "c1/1#0",
                    user="alice",
                    account="a",
                    partition="gpu",
                    state="COMPLETED",
                    gpu_model="a100",
                    nodes="node1,node2",
                ),
                _job("c1/2#0", user="bob", account="b", state="FAILED", nodes="node10"),
                _job("c1/3#0", user="alice", account="b", gpu_model="h100,a100", nodes="node2"),
            ],
        )
        assert s.job_facets(JobFilter()) == JobFacets(
            users=("alice", "bob"),
            accounts=("a", "b"),
            partitions=("gpu",),
            states=("COMPLETED", "FAILED"),
            gpu_models=("a100", "h100,a100"),
            nodes=("node1", "node10", "node2"),
        )
        only_bob = s.job_facets(JobFilter(users=("bob",)))
        assert only_bob.users == ("bob",) and only_bob.nodes == ("node10",)
        assert s.job_facets(JobFilter(), per_field=1).nodes == ("node1",)

    def test_openings(self, make_store: MakeStore) -> None:
        s = make_store()
        _append(
            s,
            1,
            openings=[
                ("e1", "user", "aa", '"alice"'),
                ("e1", "cmd", "bb", '["x"]'),
                ("e2", "user", "cc", '"bob"'),
            ],
        )
        assert s.openings("e1") == {"user": ("aa", '"alice"'), "cmd": ("bb", '["x"]')}
        assert s.openings("e2") == {"user": ("cc", '"bob"')}

    def test_checkpoints(self, make_store: MakeStore) -> None:
        s = make_store()
        b = CheckpointRow(8, b"\x02" * 32, "note 8\n", "2026-01-02T00:00:00Z")
        a = CheckpointRow(4, b"\x01" * 32, "note 4\n", "2026-01-01T00:00:00Z")
        assert s.last_checkpoint() is None
        s.add_checkpoint(b)
        s.add_checkpoint(a)
        assert s.checkpoints() == [a, b]  # ordered by size
        assert s.last_checkpoint() == b

    def test_anchors(self, make_store: MakeStore) -> None:
        s = make_store()
        assert s.anchors() == []
        late = AnchorRow("evm", "evm:1:0xab", 9, '{"tx":"a"}', "2026-01-02T00:00:00Z")
        early = AnchorRow("numbers", "numbers:api", 4, '{"nid":"b"}', "2026-01-01T00:00:00Z")
        other = AnchorRow("evm", "evm:2:0xcd", 4, '{"tx":"c"}', "2026-01-03T00:00:00Z")
        ids = [s.add_anchor(r) for r in (late, early, other)]
        assert len(set(ids)) == 3 and all(i > 0 for i in ids)
        got = s.anchors()
        assert [(r.kind, r.size, r.record) for r in got] == [
            ("numbers", 4, '{"nid":"b"}'),
            ("evm", 4, '{"tx":"c"}'),
            ("evm", 9, '{"tx":"a"}'),
        ]  # by size, then in the order they were added
        assert [r.id for r in got] == [ids[1], ids[2], ids[0]]
        assert [r.size for r in s.anchors(kind="evm")] == [4, 9]
        assert [r.record for r in s.anchors(kind="evm", target="evm:1:0xab")] == ['{"tx":"a"}']
        assert s.anchors(target="nowhere") == []
        s.update_anchor(ids[1], '{"nid":"b","commit_tx":"0x01"}')
        assert s.anchors(kind="numbers")[0].record == '{"nid":"b","commit_tx":"0x01"}'
        assert s.anchors(kind="numbers")[0].created == "2026-01-01T00:00:00Z"
        with pytest.raises(StoreError):
            s.update_anchor(max(ids) + 1, "{}")

    def test_enroll_and_revoke(self, make_store: MakeStore) -> None:
        s = make_store()
        k1 = EnrolledKey("a" * 64, b"\x01" * 32, ("node1", "node2"), "2026-01-01T00:00:00Z")
        k2 = EnrolledKey("b" * 64, b"\x02" * 32, ("*",), "2026-01-01T00:00:00Z")
        s.enroll(k1)
        s.enroll(k2)
        assert s.enrolled() == {k1.key_id: k1, k2.key_id: k2}
        assert s.revoke(k1.key_id, "2026-02-01T00:00:00Z") is True
        assert s.revoke("c" * 64, "2026-02-01T00:00:00Z") is False
        got = s.enrolled()
        assert got[k1.key_id].revoked == "2026-02-01T00:00:00Z"
        assert got[k1.key_id].public_raw == k1.public_raw and got[k2.key_id].revoked is None
        k1b = EnrolledKey(k1.key_id, k1.public_raw, ("node3",), "2026-03-01T00:00:00Z")
        s.enroll(k1b)  # re-enrolling replaces the host list
        assert s.enrolled()[k1.key_id].hosts == ("node3",)

    def test_data_survives_reopen(self, make_store: MakeStore) -> None:
        s = make_store("persist")
        rows = _append(s, 3, jobs=[_job(events=3)])
        s.set_meta("origin", "o")
        s.add_checkpoint(CheckpointRow(3, b"\x03" * 32, "n\n", "t"))
        s.add_anchor(AnchorRow("evm", "evm:1:0xab", 3, "{}", "t"))
        s.close()
        t = make_store("persist")
        assert list(t.leaves()) == rows
        assert t.get_meta("origin") == "o"
        assert [c.size for c in t.checkpoints()] == [3]
        assert [(a.kind, a.size) for a in t.anchors()] == [("evm", 3)]
        assert t.get_jobs(["c1/1#0"])["c1/1#0"].events == 3

    def test_usage_rows_select_runs_overlapping_a_period(self, make_store: MakeStore) -> None:
        s = make_store()
        totals = {"gpu_totals": {"busy_gpu_ms": 7200, "energy_mj": 900}}
        early = _job(
            "c1/1#0",
            user="u1",
            account="a",
            start="2026-01-01T00:00:00Z",
            end="2026-01-01T01:00:00Z",
            gpus=2,
            state="COMPLETED",
            fields=totals,
            last_leaf=1,
        )
        late = _job(
            "c1/2#0",
            user="u2",
            account="b",
            start="2026-03-01T00:00:00Z",
            end=None,
            gpus=1,
            state="RUNNING",
        )
        synthetic = _job("c1/3#0", user="u1", account="a", start="2026-01-01T00:30:00Z",
                         end="2026-01-01T00:40:00Z", synthetic=True)  # fmt: skip
        _append(s, 2, "c1/1#0", jobs=[early])
        _append(s, 1, "c1/2#0", jobs=[late])
        _append(s, 1, "c1/3#0", jobs=[synthetic])
        everything = UsageFilter(since="2025-01-01T00:00:00", until="2027-01-01T00:00:00")
        rows = {r.job_key: r for r in s.usage_rows(everything)}
        # the synthetic filter applies in every backend, so two backends report the same
        assert set(rows) == {"c1/1#0", "c1/2#0"}
        r = rows["c1/1#0"]
        assert (r.user, r.account, r.gpus, r.state) == ("u1", "a", 2, "COMPLETED")
        assert (r.busy_gpu_ms, r.energy_mj, r.synthetic) == (7200, 900, False)
        assert r.leaves == [0, 1] and r.last_leaf == 1
        assert rows["c1/2#0"].busy_gpu_ms is None and rows["c1/2#0"].leaves == [2]
        with_synthetic = UsageFilter(everything.since, everything.until, include_synthetic=True)
        assert {r.job_key for r in s.usage_rows(with_synthetic)} == set(rows) | {"c1/3#0"}
        february = UsageFilter(since="2026-02-01T00:00:00", until="2026-04-01T00:00:00")
        assert [r.job_key for r in s.usage_rows(february)] == ["c1/2#0"]
        only_b = UsageFilter(everything.since, everything.until, accounts=("b",))
        assert [r.job_key for r in s.usage_rows(only_b)] == ["c1/2#0"]
        only_u1 = UsageFilter(everything.since, everything.until, users=("u1",))
        assert [r.job_key for r in s.usage_rows(only_u1)] == ["c1/1#0"]

    def test_partitions_cover_the_job_index_once(self, make_store: MakeStore) -> None:
        s = make_store()
        for i in range(1, 8):
            _append(s, 1, f"c1/{i}#0", jobs=[_job(f"c1/{i}#0", start="2026-01-01T00:00:00Z")])
        parts = s.partitions(3)
        if not parts:
            return  # a backend with no parallel scan
        assert len(parts) <= 3
        everything = UsageFilter(since="2025-01-01T00:00:00", until="2027-01-01T00:00:00")
        seen = [r.job_key for part in parts for r in s.usage_rows(everything, part)]
        assert sorted(seen) == sorted(f"c1/{i}#0" for i in range(1, 8))

    def test_warnings_and_upgrade_of_a_current_store(self, make_store: MakeStore) -> None:
        s = make_store()
        assert isinstance(s.warnings(), list)
        _append(s, 3)
        s.upgrade()
        before, after = s.upgrade()
        assert before == after  # upgraded: nothing left to do
        assert s.size() == 3 and [r.index for r in s.leaves()] == [0, 1, 2]

    def test_job_keys_and_replace_jobs(self, make_store: MakeStore) -> None:
        s = make_store()
        _append(s, 2, jobs=[_job("c1/1#0", events=2, gpus=1), _job("c1/2#0", events=0)])
        assert s.job_keys() == ["c1/1#0", "c1/2#0"]
        rebuilt = [_job("c1/1#0", events=2, gpus=1, fields={"gpu_totals": {"busy_gpu_ms": 5}})]
        s.replace_jobs(2, rebuilt)
        assert s.job_keys() == ["c1/1#0"]
        assert s.get_jobs(["c1/1#0"]) == {"c1/1#0": rebuilt[0]}

    def test_replace_jobs_refuses_a_log_that_grew(self, make_store: MakeStore) -> None:
        s = make_store()
        _append(s, 2, jobs=[_job("c1/1#0", events=2, gpus=1)])
        with pytest.raises(StoreConflict, match="run it again"):
            s.replace_jobs(1, [])
        assert s.job_keys() == ["c1/1#0"]  # unchanged

    def test_cosignatures(self, make_store: MakeStore) -> None:
        s = make_store("cosigned")
        assert s.cosignatures(4) == {} and s.cosigned_sizes() == {}
        s.add_cosignatures(4, [("w1", "\u2014 w1 AAAA\n"), ("w2", "\u2014 w2 BBBB\n")])
        s.add_cosignatures(8, [("w1", "\u2014 w1 CCCC\n")])
        s.add_cosignatures(8, [("w1", "\u2014 w1 DDDD\n")])  # a later one replaces it
        assert s.cosignatures(4) == {"w1": "\u2014 w1 AAAA\n", "w2": "\u2014 w2 BBBB\n"}
        assert s.cosignatures(8) == {"w1": "\u2014 w1 DDDD\n"}
        assert s.cosigned_sizes() == {"w1": 8, "w2": 4}
        s.close()
        assert make_store("cosigned").cosigned_sizes() == {"w1": 8, "w2": 4}
