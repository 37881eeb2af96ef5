"""The controller's collector: ``scheduled``, ``completed`` and ``final_state`` for every
job, from batched reads, written to the spool as the hooks write (so the controller's
host key signs them). One long-lived process per controller: ``computeproof controller
run`` (conf/computeproof-controller.service).

Each poll (``controller_poll_interval``, default 1 s) makes one cheap read of every job
slurmctld holds: ``squeue -O`` of fields no job user can set (or pyslurm). From it the
collector learns which runs were allocated and which ended, and writes ``completed`` at
once (exit code and signal, times, TRES). Records that need more are batched:

- ``scheduled`` carries the job's name, work dir and GPU indices, which only a structured
  read gives (``squeue --json``): one such read for all jobs owed one, at most every
  DETAIL_INTERVAL seconds (in 22.05 it serializes every job, eight times the probe's CPU);
- ``final_state`` is accounting's settled record (``sacct -P`` of fields no user sets, and
  of the batch steps, for all the runs owed one), at most every ACCOUNTING_INTERVAL
  seconds; a run whose job was requeued or purged before it was seen ending takes its
  ``completed`` (and, if need be, ``scheduled``, from ``sacct --json``: its name and work
  dir) from there too.

Short jobs that start and end between two polls are still recorded: slurmctld keeps ended
jobs for MinJobAge, and accounting has them after that. On start, and every SWEEP_INTERVAL,
one ``sacct`` read of the jobs that ended since the persisted cursor catches up on what
happened while the collector was down. What was written is kept in
``<spool>/controller/state.json`` (written after the events, fsynced, renamed), and event
ids are deterministic, so across restarts every event is written once by id; an event
written again after a crash is the same bytes (its time is Slurm's, not the poll's).

The optional controller hooks write ``scheduled`` / ``completed`` under the same ids.
Failures (Slurm unreachable, no final state in time) are logged and counted like a
hook's (hooklog.py); Slurm errors never stop the loop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from computeproof.config import Config
from computeproof.errors import CanonicalError, ComputeProofError, SpoolError
from computeproof.event import new_event
from computeproof.spool import Spool
from slurm_hooks.finalstate import NOT_FINAL, ended, settled
from slurm_hooks.hooklog import count_failure, failure_line
from slurm_hooks.jobinfo import AccountingRecord, JobInfo
from slurm_hooks.lifecycle import completed_payload, event_time, final_payload, scheduled_payload

log = logging.getLogger("computeproof.controller")

DETAIL_INTERVAL = 5.0  # seconds between structured reads for owed scheduled events
ACCOUNTING_INTERVAL = 5.0  # seconds between sacct reads for owed final states
ACCOUNTING_DELAY = 2.0  # seconds after a run's end before accounting is first asked
SWEEP_INTERVAL = 300.0  # seconds between catch-up reads of jobs ended since the cursor
SWEEP_OVERLAP = 120  # seconds the next sweep reaches back (controller/slurmdbd clocks)
DETAIL_DEADLINE = 60.0  # after this, scheduled is written from the cheap read alone
FINAL_DEADLINE = 120.0  # after this, a run's final state is given up (and counted)
BATCH = 500  # job ids per sacct call
SPOOL_BATCH = 5000  # events per spool file (a catch-up after a long stop writes many)
# accounting states of a run that is over: the sweep asks only for these
ENDED_STATES = ("CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REQUEUED")  # fmt: skip
EVENTS = ("scheduled", "completed", "final_state")
STATE_VERSION = 1
COMPLETING_DEADLINE = 60.0  # a run COMPLETING this long gets completed from what is known
# (past KillWait's default 30 s: a cancelled job that ignores SIGTERM reads 0:0 that long)


@dataclass
class Run:
    """What the collector knows of one run of one job."""

    job_id: int
    run: int
    job: str  # display id
    written: set[str] = field(default_factory=set)
    start: int | None = None
    end: int | None = None
    batch: bool | None = None  # a batch job: accounting's record waits for its batch step
    nodes: list[str] = field(default_factory=list)  # while it ran (COMPLETING shrinks it)
    ran: bool = True  # False: ended without ever being allocated (no scheduled)
    first_seen: float = 0.0
    ended_seen: float | None = None  # when it was first known to be over
    live: bool = False  # in the controller's latest view, as this run
    asked: int = 0  # accounting reads of this run so far (not persisted)

    @property
    def done(self) -> bool:
        """Whether every event this run gets has been written (or given up): its
        final_state, and its scheduled if it ever ran."""
        return "final_state" in self.written and (not self.ran or "scheduled" in self.written)

    def to_json(self) -> list[object]:
        """The persisted form."""
        return [self.job_id, self.run, self.job, sorted(self.written), self.start, self.end,
                self.batch, self.nodes, self.ran, self.first_seen, self.ended_seen]  # fmt: skip

    @classmethod
    def from_json(cls, item: list[object]) -> Run:
        """Read back :meth:`to_json`."""
        job_id, run, job, written, start, end, batch, nodes, ran, first, ended_at = item
        return cls(int(job_id), int(run), str(job), set(written), start, end, batch,  # type: ignore[call-overload,arg-type]
                   list(nodes), bool(ran), float(first), ended_at)  # type: ignore[call-overload,arg-type]  # fmt: skip


class CollectorState:
    """The runs owed events, the runs done but still visible, and the sweep cursor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.runs: dict[tuple[int, int], Run] = {}
        self.cursor: int | None = None
        self.dirty = False

    def load(self) -> None:
        """Read the state file, if any (a damaged one is an error: events would repeat)."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise ComputeProofError(
                f"cannot read the collector's state {self.path}: {e}; move it away to "
                "start over (events already written would be written again, same ids)"
            ) from e
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ComputeProofError(f"{self.path} is not a collector state of version "
                                    f"{STATE_VERSION}; move it away to start over")  # fmt: skip
        cursor = data.get("cursor")
        self.cursor = cursor if isinstance(cursor, int) else None
        for item in data.get("runs") or ():
            r = Run.from_json(item)
            self.runs[(r.job_id, r.run)] = r

    def save(self) -> None:
        """Write the state whole or not at all (tmp, fsync, rename)."""
        if not self.dirty:
            return
        data = json.dumps(
            {"version": STATE_VERSION, "cursor": self.cursor,
             "runs": [r.to_json() for r in self.runs.values()]},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.dirty = False


class Collector:
    """Polls Slurm through ``info`` and writes the controller's events for every job."""

    def __init__(
        self,
        config: Config,
        info: JobInfo,
        clock: Callable[[], float] = time.time,
        detail_interval: float = DETAIL_INTERVAL,
        accounting_interval: float = ACCOUNTING_INTERVAL,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.config = config
        self.info = info
        self.clock = clock
        self.detail_interval = detail_interval
        self.accounting_interval = accounting_interval
        self.sweep_interval = sweep_interval
        self.spool = Spool(config.spool_dir)
        self.state = CollectorState(os.path.join(config.spool_dir, "controller", "state.json"))
        self.state.load()
        self._last_detail = -1e18
        self._last_accounting = -1e18
        self._last_sweep = -1e18
        self._warned: dict[str, float] = {}
        self._live_ids: set[int] = set()  # jobs in the controller's latest view
        self._pending: list[tuple[dict[str, object], Run, str]] = []
        self.written = 0

    # ----------------------------------------------------------------- events

    def _write(self, kind: str, run: Run, payload: dict[str, object], epoch: int | None) -> None:
        """Queue one event; :meth:`_flush` writes a poll's events to the spool together."""
        try:
            event = new_event(kind, self.config.cluster, run.job, run.job_id, self.config.host,
                              payload, run=run.run, time=event_time(epoch))  # fmt: skip
            if self._keep_waiting(str(event["id"])):
                self._pending.append((event, run, kind))
        except CanonicalError as e:  # never expected of Slurm's values; never retried
            self._problem(f"cannot record {kind} (run {run.run}): {e}", run.job_id)
        run.written.add(kind)
        self.state.dirty = True
        self.written += 1

    def _flush(self) -> None:
        """Write the queued events as one spool file (a batch: one file and one sync for
        all of them; a lone event as its own file). If the spool cannot take them, their
        runs owe them again: the state is not saved with them marked written, and the next
        poll writes them (the same ids)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            events = [event for event, _, _ in pending]
            if len(events) == 1:
                self.spool.write(events[0])
            else:
                for i in range(0, len(events), SPOOL_BATCH):
                    self.spool.write_batch(events[i : i + SPOOL_BATCH])
        except SpoolError:
            for _, run, kind in pending:
                run.written.discard(kind)
            self.written -= len(pending)
            raise

    def _keep_waiting(self, event_id: str) -> bool:
        """Whether to write an event: not when PrologSlurmctld's record of it (same id)
        waits in the spool, unless that one is from its environment alone (its squeue call
        failed). A forwarded one the ledger dedupes."""
        try:
            with open(os.path.join(self.spool.new, f"{event_id}.json"), "rb") as f:
                waiting = f.read()
        except OSError:
            return True
        return b'"source":"env only' in waiting

    def _scheduled(self, run: Run, rec: AccountingRecord, source: str) -> None:
        self._write("scheduled", run, scheduled_payload(rec, source, "collector"),
                    rec.get("start_epoch"))  # fmt: skip

    def _completed(self, run: Run, rec: AccountingRecord, source: str) -> None:
        self._write("completed", run, completed_payload(rec, source, "collector"),
                    rec.get("end_epoch"))  # fmt: skip

    def _final(self, run: Run, rec: AccountingRecord, source: str) -> None:
        self._write("final_state", run, final_payload(rec, source), rec.get("end_epoch"))

    def _problem(self, what: str, job_id: int | None = None, count: bool = True) -> None:
        """Log a problem (once a minute per message) and count it where admins look."""
        now = self.clock()
        if now - self._warned.get(what, -1e18) >= 60:
            self._warned[what] = now
            log.warning("job %s: %s", job_id if job_id is not None else "-", what)
        if count:
            count_failure(self.config.spool_dir, failure_line("controller", what, job_id),
                          self.config.run_dir)  # fmt: skip

    # ------------------------------------------------------------------ polls

    def poll(self) -> int:
        """One pass: the cheap read, and the batched reads that are due; events written."""
        before = self.written
        now = self.clock()
        try:
            live = self.info.live_jobs(detail=False)
        except ComputeProofError as e:
            self._problem(f"cannot read the controller's jobs: {e}", count=False)
            live = None
        if live is not None:
            self._see(live, now)
        if now - self._last_sweep >= self.sweep_interval:
            self._sweep(now)
        owed_sched = [r for r in self.state.runs.values() if r.ran and r.live
                      and "scheduled" not in r.written]  # fmt: skip
        if self._detail_due(owed_sched, now):
            self._detail(owed_sched, now)
        ending = [r for r in self.state.runs.values()
                  if not r.done and r.ended_seen is not None]  # fmt: skip
        owed_acct = [r for r in ending if now >= _next_ask(r)]
        if self._accounting_due(owed_acct, ending, now):
            self._accounting(owed_acct, now)
        self._flush()  # before pruning runs, and before the state that says they are written
        self._prune(now)
        self.state.save()
        return self.written - before

    # Each batched read is worth more the more runs it covers: while a burst of jobs is
    # still starting (or ending), a read waits for the burst, at most its interval.

    def _detail_due(self, owed: list[Run], now: float) -> bool:
        """Whether to make the structured read for ``owed`` now: not more often than
        detail_interval, and not while runs are still being allocated (some first seen
        by this poll), unless the oldest has waited detail_interval."""
        if not owed or now - self._last_detail < self.detail_interval:
            return False
        starting = any(r.first_seen >= now for r in owed)
        return not starting or now - min(r.first_seen for r in owed) >= self.detail_interval

    def _accounting_due(self, owed: list[Run], ending: list[Run], now: float) -> bool:
        """Whether to read accounting for ``owed`` now: not more often than
        accounting_interval, and not while runs that ended are still in their
        ACCOUNTING_DELAY (never asked yet), unless the oldest owed has waited
        accounting_interval past its time."""
        if not owed or now - self._last_accounting < self.accounting_interval:
            return False
        waiting = any(now < _next_ask(r) for r in ending if not r.asked)
        oldest = min(_next_ask(r) for r in owed)
        return not waiting or now - oldest >= self.accounting_interval

    def _see(self, live: Sequence[AccountingRecord], now: float) -> None:
        """Fold the controller's view into the runs: new allocations, ended runs."""
        runs = self.state.runs
        for r in runs.values():
            r.live = False
        latest: dict[int, int] = {}
        for rec in live:
            job_id, run_no = rec["job_id"], rec.get("restarts") or 0
            latest[job_id] = max(latest.get(job_id, 0), run_no)
            allocated = bool(rec.get("nodes"))
            over = ended(rec)
            if not allocated and not over:
                continue  # pending: nothing to record yet
            key = (job_id, run_no)
            run = runs.get(key)
            if run is None:
                if not allocated and rec.get("state") in NOT_FINAL:
                    continue
                if run_no > 0 and rec.get("state") == "COMPLETING":
                    # Slurm counts a restart when it requeues, while the requeued run is
                    # still completing on its nodes: this record is the run before's end
                    # (its start time, its nodes); run ``run_no`` is seen when it runs.
                    continue
                run = Run(job_id, run_no, rec["job"], start=rec.get("start_epoch"),
                          batch=_expects_batch_step(rec), ran=allocated,
                          first_seen=now)  # fmt: skip
                runs[key] = run
                self.state.dirty = True
            run.live = True
            completing = rec.get("state") == "COMPLETING"
            if allocated and not completing and run.nodes != rec.get("nodes"):
                run.nodes = list(rec.get("nodes") or ())
                self.state.dirty = True
            if over:
                if run.ended_seen is None:
                    run.ended_seen = now
                    run.end = rec.get("end_epoch")
                    self.state.dirty = True
                if "completed" not in run.written:
                    # COMPLETING: slurmctld lists only the nodes still completing, and a
                    # cancelled (timed-out) run reads 0:0 until its batch step reports its
                    # signal: wait for the final state, unless the nodes were seen while it
                    # ran and the exit is already known (not 0:0)
                    if not completing:
                        self._completed(run, rec, "squeue")
                    elif ((run.nodes and _exit_known(rec))
                          or now - run.ended_seen >= COMPLETING_DEADLINE):  # fmt: skip
                        self._completed(run, _with_nodes(rec, run.nodes), "squeue")
            elif (run.ran and "scheduled" not in run.written
                  and now - run.first_seen >= DETAIL_DEADLINE):  # fmt: skip
                # no structured read succeeded in time: what the cheap read gives
                self._scheduled(run, rec, "squeue -O")
        self._live_ids = set(latest)
        # earlier runs of a requeued job that no poll saw (requeued between two polls)
        for job_id, newest in latest.items():
            for run_no in range(newest):
                if (job_id, run_no) not in runs:
                    runs[(job_id, run_no)] = Run(job_id, run_no, "", first_seen=now,
                                                 ended_seen=now)  # fmt: skip
                    self.state.dirty = True
        # a run whose job was requeued since, or purged: its end is accounting's to tell
        for (job_id, run_no), r in runs.items():
            gone = job_id not in latest or latest[job_id] > run_no
            if gone and not r.done and not r.live and r.ended_seen is None:
                r.ended_seen = now
                self.state.dirty = True

    def _detail(self, owed: list[Run], now: float) -> None:
        """One structured read for every run owed ``scheduled``."""
        self._last_detail = now
        try:
            records = self.info.live_jobs(detail=True, job_ids=[r.job_id for r in owed])
        except ComputeProofError as e:
            self._problem(f"cannot read the controller's jobs in detail: {e}", count=False)
            return
        by_id = {rec["job_id"]: rec for rec in records}
        for run in owed:
            rec = by_id.get(run.job_id)
            if rec is not None and (rec.get("restarts") or 0) == run.run and rec.get("nodes"):
                if rec.get("state") == "COMPLETING" and run.nodes:
                    rec = _with_nodes(rec, run.nodes)
                self._scheduled(run, rec, "squeue --json")

    def _accounting(self, owed: list[Run], now: float) -> None:
        """One accounting read for every run owed an event accounting must give."""
        self._last_accounting = now
        # the structured read only for runs whose scheduled must come from accounting
        # (its name and work dir); the settled records of the rest from text of fields
        # no user sets, about a sixth of the CPU
        detailed = {r.job_id for r in owed if _needs_detail(r)}
        reads = [(True, sorted(detailed)), (False, sorted({r.job_id for r in owed} - detailed))]
        records: list[AccountingRecord] = []
        for detail, ids in reads:
            for i in range(0, len(ids), BATCH):
                try:
                    records.extend(self.info.jobs_accounting(ids[i : i + BATCH], detail=detail))
                except ComputeProofError as e:
                    self._problem(f"cannot read accounting: {e}", count=False)
                    return
        by_job: dict[int, list[AccountingRecord]] = {}
        for rec in records:
            by_job.setdefault(rec["job_id"], []).append(rec)
        for run in owed:
            self._from_accounting(run, by_job.get(run.job_id, []), now)

    def _from_accounting(self, run: Run, records: list[AccountingRecord], now: float) -> None:
        run.asked += 1
        rec = _match(records, run)
        if rec is not None and not run.ran:
            # never allocated: accounting shows the cancel time as its start, on no nodes
            rec = {**rec, "start_epoch": None, "elapsed_s": 0}
        if rec is not None:
            if not run.job:  # a run known only from its job's restart count
                run.job, run.start = rec["job"], rec.get("start_epoch")
                run.ran = _ran(rec)
                self.state.dirty = True
            if run.end is None and rec.get("end_epoch") is not None:
                run.end = rec.get("end_epoch")
                self.state.dirty = True
            if run.batch is not None:
                rec["batch"] = run.batch  # so settled() waits for the batch step, or not
            # while slurmctld holds the run, its records are the better source (the exact
            # bytes of a name; squeue's signal of a cancelled job): accounting is for the rest
            if not run.live:
                if run.ran and "scheduled" not in run.written and rec.get("start_epoch"):
                    self._scheduled(run, rec, "sacct --json")
                if "completed" not in run.written and ended(rec):
                    self._completed(run, rec, "sacct")
            if settled(rec) and "final_state" not in run.written:
                self._final(run, rec, "sacct")
            if run.done:
                return
        waited = now - (run.ended_seen if run.ended_seen is not None else run.first_seen)
        if waited < FINAL_DEADLINE:
            return  # slurmdbd has not caught up yet (or the structured read is due): again
        if "final_state" not in run.written:
            if rec is not None and rec.get("state") not in NOT_FINAL:
                self._final(run, rec, "sacct (partial)")
            else:
                self._problem(f"no final state from accounting within {FINAL_DEADLINE:g} s "
                              f"of the run's end (run {run.run})", run.job_id)  # fmt: skip
                run.written.add("final_state")  # given up: counted above, never invented
        if not run.done:  # ran, but neither the controller nor accounting gave scheduled
            self._problem(f"no scheduled record within {FINAL_DEADLINE:g} s of the run's "
                          f"end (run {run.run})", run.job_id)  # fmt: skip
            run.written.add("scheduled")  # given up: counted above, never invented
        self.state.dirty = True

    def _sweep(self, now: float) -> None:
        """Catch up on runs that ended since the cursor (the collector was down)."""
        self._last_sweep = now
        until = int(now)
        since = self.state.cursor if self.state.cursor is not None else until
        if since < until:
            try:
                records = self.info.accounting(since, until, ENDED_STATES)
            except ComputeProofError as e:
                self._problem(f"cannot read accounting since the cursor: {e}", count=False)
                return
            by_job: dict[int, list[AccountingRecord]] = {}
            for rec in records:
                by_job.setdefault(rec["job_id"], []).append(rec)
            for job_id, job_records in by_job.items():
                known = [r for r in self.state.runs.values() if r.job_id == job_id]
                for rec, run_no in zip(job_records, run_numbers(job_records, known), strict=True):
                    if run_no is None:
                        continue
                    known_run = self.state.runs.get((job_id, run_no))
                    if known_run is not None:
                        if not known_run.job:  # known only by its job's restart count
                            known_run.job, known_run.end = rec["job"], rec.get("end_epoch")
                            known_run.start = rec.get("start_epoch")
                            known_run.ran = _ran(rec)
                            self.state.dirty = True
                        continue
                    if (rec.get("end_epoch") or since) < since:
                        continue  # ended before the window: recorded before, or never
                    start = rec.get("start_epoch")
                    self.state.runs[(job_id, run_no)] = Run(
                        job_id, run_no, rec["job"], start=start, end=rec.get("end_epoch"),
                        ran=_ran(rec), first_seen=now, ended_seen=now,
                    )  # fmt: skip
                    self.state.dirty = True
        self.state.cursor = max(since, until - SWEEP_OVERLAP)
        self.state.dirty = True

    def _prune(self, now: float) -> None:
        """Forget runs that are done, gone from the controller and behind the cursor (a
        later sweep cannot return them)."""
        cursor = self.state.cursor
        if cursor is None:
            return
        gone = [key for key, r in self.state.runs.items()
                if r.done and r.job_id not in self._live_ids and _end(r, now) < cursor]  # fmt: skip
        for key in gone:
            del self.state.runs[key]
        if gone:
            self.state.dirty = True

    # ------------------------------------------------------------------- loop

    def run(
        self, stop: threading.Event, interval: float, wrote: threading.Event | None = None
    ) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; set ``wrote`` after a
        poll that wrote events (the forwarding thread takes them at once)."""
        while not stop.is_set():
            started = time.monotonic()
            before = self.written
            try:
                self.poll()
            except SpoolError as e:  # the spool's disk: counted, tried again next poll
                self._problem(str(e))
            if wrote is not None and self.written > before:
                wrote.set()
            stop.wait(max(0.0, interval - (time.monotonic() - started)))


def forward_loop(config: Config, stop: threading.Event, wrote: threading.Event) -> None:
    """The collector's forwarder (``forward_interval`` > 0): a pass of the spool into the
    ledger or the collector service (``collector_url``) as soon as a poll wrote events,
    and every ``forward_interval`` seconds (events a failed pass left, the optional
    controller hooks' events). A failure is logged once; the events wait in the spool."""
    from computeproof.forward import LoggedForwarder

    forwarder = LoggedForwarder(config, log)
    while not stop.is_set():
        wrote.wait(config.forward_interval)
        wrote.clear()
        if stop.is_set():
            break
        try:
            forwarder.once()
        except Exception:  # the forwarder outlives any one bad pass
            log.exception("forwarding failed")
            stop.wait(config.forward_interval)


def run_numbers(records: list[AccountingRecord], known: list[Run]) -> list[int | None]:
    """The run number of each of one job's accounting records (oldest first): Slurm's
    restart count where accounting has one (24.11 and later); else (22.05) counted from
    the runs the collector already knows by their start times, whose numbers came from
    the controller; None for a record that is a known run."""
    out: list[int | None] = []
    anchors = sorted((r.start, r.run) for r in known if r.start is not None)
    known_starts = {s for s, _ in anchors}
    unknown = sorted({r.get("start_epoch") or 0 for r in records
                      if not isinstance(r.get("restarts"), int)} - known_starts)  # fmt: skip
    for rec in records:
        restarts = rec.get("restarts")
        if isinstance(restarts, int):
            out.append(restarts)
            continue
        start = rec.get("start_epoch") or 0
        if start in known_starts:
            out.append(None)
            continue
        after = [(s, n) for s, n in anchors if s > start]
        before = [(s, n) for s, n in anchors if s < start]
        if after:
            s_a, n_a = after[0]
            out.append(n_a - sum(1 for u in unknown if start <= u < s_a))
        elif before:
            s_b, n_b = before[-1]
            out.append(n_b + sum(1 for u in unknown if s_b < u <= start))
        else:
            out.append(unknown.index(start))
    return [n if n is None or n >= 0 else None for n in out]


def _ran(rec: AccountingRecord) -> bool:
    """Whether an accounting record (of a run that ended a while ago, so whole) is of a run
    that was allocated: a job cancelled before it ran shows its cancel time as its start,
    on no nodes."""
    return rec.get("start_epoch") is not None and bool(rec.get("nodes") or rec.get("num_nodes"))


def _needs_detail(run: Run) -> bool:
    """Whether a run's accounting read must be the structured one: it may owe a
    ``scheduled`` that only accounting can give (never seen allocated by a poll: its
    job's name and work dir), or it is known only by its job's restart count."""
    return not run.job or (run.ran and not run.live and "scheduled" not in run.written)


def _next_ask(run: Run) -> float:
    """When accounting is next asked for ``run``'s record: slurmdbd has a run's end a
    moment after slurmctld (ACCOUNTING_DELAY after Slurm's end time, or after the
    collector learned of it), and a record not yet whole is asked for again after 5, 10,
    20... s (at most 30 s): a burst of jobs is read about once, not once a poll."""
    base = float(run.end if run.end is not None else run.ended_seen or 0.0)
    if run.asked == 0:
        return base + ACCOUNTING_DELAY
    return base + ACCOUNTING_DELAY + min(30.0, 5.0 * 2.0 ** (run.asked - 1))


def _end(run: Run, now: float) -> float:
    """When the run ended, as far as the collector knows."""
    if run.end is not None:
        return float(run.end)
    return run.ended_seen if run.ended_seen is not None else now


def _expects_batch_step(rec: AccountingRecord) -> bool | None:
    """Whether accounting will list a batch step for this run: batch jobs, except a het
    job's later components (squeue says batch for them; their batch step is the leader's)."""
    offset = rec.get("het_job_offset")
    if isinstance(offset, int) and offset > 0:
        return False
    return rec.get("batch")


def _exit_known(rec: AccountingRecord) -> bool:
    """Whether a COMPLETING record's exit is final: its batch step reported a nonzero exit
    code or signal. 0:0 may still change (scancel and a time limit mark a job ended before
    its batch step is killed: 0:15 once the step reports, up to KillWait later)."""
    return bool(rec.get("exit_code") or rec.get("signal"))


def _with_nodes(rec: AccountingRecord, nodes: list[str]) -> AccountingRecord:
    """``rec`` with the node list seen while the job ran (a COMPLETING job's shrinks)."""
    if not nodes:
        return rec
    return {**rec, "nodes": list(nodes), "num_nodes": len(nodes)}


def _match(records: list[AccountingRecord], run: Run) -> AccountingRecord | None:
    """The accounting record of ``run``: by restart count where accounting has it, else
    by start time, else by position (accounting lists runs oldest first)."""
    if not records:
        return None
    with_count = [r for r in records if isinstance(r.get("restarts"), int)]
    if with_count:
        return next((r for r in with_count if r.get("restarts") == run.run), None)
    if run.start is not None:
        for r in records:
            if r.get("start_epoch") == run.start:
                return r
    return records[run.run] if run.run < len(records) else None


def lock(config: Config) -> int:
    """Take the collector's lock (one collector per spool); ComputeProofError if held."""
    import fcntl

    directory = os.path.join(config.spool_dir, "controller")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise ComputeProofError(
            f"another collector runs for spool {config.spool_dir} (its lock "
            f"{directory}/lock is held); run one collector per controller"
        ) from e
    return fd
