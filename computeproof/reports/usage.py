"""Usage aggregation: GPU-hours, measured busy time, energy, CO2e, cost and failure shares per
group, computed exactly from integer job figures (GPU-ms, mJ) and rounded only on output.

Proration: a job is counted over the part of its run [start, end) that lies inside the report
period [from, to), and split by time at month boundaries and at the instants its account
changes grant. Each piece carries the share (piece length / run length) of the job's
allocated GPU time (GPUs x elapsed), busy GPU time and energy; shares are exact fractions.
A job counts once in every group (and once in the total) where it has a piece.
Jobs not yet started or still running at the report's checkpoint are not counted (a note
says how many); jobs without a busy-time measurement count as unmeasured, never as idle.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from computeproof.errors import ReportError
from computeproof.reports.dates import ms_rfc3339, rfc3339_ms
from computeproof.reports.grants import NO_GRANT, GrantMap
from computeproof.reports.ratecard import RateCard
from computeproof.units import MJ_PER_KWH, MS_PER_HOUR, rounded

GROUP_DIMS = ("account", "user", "partition", "gpu_model", "month", "grant", "pi")
UNKNOWN = "(unknown)"
FAILED_STATES = frozenset(
    {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
_FINE = ("account", "user", "partition", "gpu_model", "month", "grant")
# bucket slots
_JOBS, _FAILED, _CANCELLED, _ALLOC, _MEASURED, _BUSY, _ENERGY = range(7)
_SLOTS = 7


class JobUsage(NamedTuple):
    """The figures of one job run that a report counts (from the job index or its receipts)."""

    job_key: str
    account: str | None
    user: str | None
    partition: str | None
    gpu_model: str | None
    state: str | None
    gpus: int | None
    start: str | None
    end: str | None
    elapsed_s: int | None
    busy_gpu_ms: int | None
    energy_mj: int | None
    synthetic: bool


@dataclass(frozen=True)
class ReportParams:
    """What a report counts and how: period, filters, grouping, prices, grants, carbon."""

    from_ms: int
    to_ms: int
    accounts: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    grants: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ("account",)
    include_synthetic: bool = False
    grid_intensity_g_per_kwh: Decimal | None = None
    ratecard: RateCard | None = None
    grant_map: GrantMap | None = None

    def __post_init__(self) -> None:
        if self.to_ms <= self.from_ms:
            raise ReportError("the report period is empty: --from must be before --to")
        for d in self.group_by:
            if d not in GROUP_DIMS:
                raise ReportError(f"--group-by {d!r}: choose from {', '.join(GROUP_DIMS)}")

    def to_json(self) -> dict[str, object]:
        """The parameters as embedded in a report (enough to recompute it)."""
        return {
            "from": ms_rfc3339(self.from_ms),
            "to": ms_rfc3339(self.to_ms),
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "accounts": list(self.accounts),
            "users": list(self.users),
            "grants": list(self.grants),
            "group_by": list(self.group_by),
            "include_synthetic": self.include_synthetic,
            "grid_intensity_g_per_kwh": None
            if self.grid_intensity_g_per_kwh is None
            else str(self.grid_intensity_g_per_kwh),
        }


def _month_starts(lo: int, hi: int) -> tuple[list[int], list[str]]:
    start = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=lo)
    cur = dt.datetime(start.year, start.month, 1)
    starts: list[int] = []
    names: list[str] = []
    epoch = dt.datetime(1970, 1, 1)
    while True:
        ms = int((cur - epoch).total_seconds()) * 1000
        if ms >= hi:
            break
        starts.append(ms)
        names.append(cur.strftime("%Y-%m"))
        cur = (cur.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return starts, names


@dataclass
class Aggregator:
    """Folds jobs into exact per-piece buckets; :meth:`figures` rolls them up."""

    params: ReportParams
    counted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seen_accounts: set[str] = field(default_factory=set)
    seen_users: set[str] = field(default_factory=set)
    _ints: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    _fracs: dict[tuple[str, ...], list[Fraction]] = field(default_factory=dict)
    _split: list[tuple[list[tuple[str, ...]], int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = self.params
        self._months, self._month_names = _month_starts(p.from_ms, p.to_ms)
        self._accounts = frozenset(p.accounts)
        self._users = frozenset(p.users)
        self._grants = frozenset(p.grants)

    def _skip(self, why: str) -> bool:
        self.skipped[why] = self.skipped.get(why, 0) + 1
        return False

    def add(self, job: JobUsage) -> bool:
        """Count one job run; False (and a reason tallied) when it has nothing in the report."""
        p = self.params
        if job.synthetic and not p.include_synthetic:
            return self._skip("synthetic (benchmark) jobs")
        account = job.account or UNKNOWN
        user = job.user or UNKNOWN
        if self._accounts and account not in self._accounts:
            return False
        if self._users and user not in self._users:
            return False
        if job.start is None:
            return self._skip("jobs that never started")
        if job.end is None:
            return self._skip("jobs still running at the checkpoint")
        s = rfc3339_ms(job.start)
        e = rfc3339_ms(job.end)
        if e < s:
            return self._skip("jobs whose end precedes their start")
        a, b = max(s, p.from_ms), min(e, p.to_ms)
        if b < a or (b == a and not (s == e and p.from_ms <= s < p.to_ms)):
            return False
        gmap = p.grant_map
        months = self._months
        cuts = [m for m in months[bisect.bisect_right(months, a) : bisect.bisect_left(months, b)]]
        if gmap is not None:
            gc = gmap.cuts(account)
            if gc:
                cuts.extend(gc[bisect.bisect_right(gc, a) : bisect.bisect_left(gc, b)])
                cuts.sort()
        gpus = job.gpus or 0
        alloc = gpus * (job.elapsed_s * 1000 if job.elapsed_s is not None else e - s)
        busy = job.busy_gpu_ms
        energy = job.energy_mj
        state = (job.state or "").upper()
        failed = 1 if state in FAILED_STATES else 0
        cancelled = 1 if state.startswith("CANCELLED") else 0
        base = (account, user, job.partition or UNKNOWN, job.gpu_model or UNKNOWN)
        points = [a, *cuts, b]
        pieces: list[tuple[tuple[str, ...], int, int]] = []
        for lo, hi in itertools.pairwise(points):
            if hi <= lo and a != b:
                continue
            grant = gmap.grant_at(account, lo) if gmap is not None else NO_GRANT
            if self._grants and grant not in self._grants:
                continue
            month = self._month_names[bisect.bisect_right(months, lo) - 1]
            pieces.append(((*base, month, grant), lo, hi))
        if not pieces:
            return False
        self.counted += 1
        self.seen_accounts.add(account)
        self.seen_users.add(user)
        whole = len(pieces) == 1 and pieces[0][1] == s and pieces[0][2] == e
        if whole:
            key = pieces[0][0]
            row = self._ints.get(key)
            if row is None:
                row = self._ints[key] = [0] * _SLOTS
            row[_JOBS] += 1
            row[_FAILED] += failed
            row[_CANCELLED] += cancelled
            row[_ALLOC] += alloc
            if busy is not None:
                row[_MEASURED] += alloc
                row[_BUSY] += busy
            if energy is not None:
                row[_ENERGY] += energy
            return True
        span = e - s
        for key, lo, hi in pieces:
            share = Fraction(hi - lo, span) if span else Fraction(1)
            fr = self._fracs.get(key)
            if fr is None:
                fr = self._fracs[key] = [Fraction(0)] * _SLOTS
            fr[_ALLOC] += alloc * share
            if busy is not None:
                fr[_MEASURED] += alloc * share
                fr[_BUSY] += busy * share
            if energy is not None:
                fr[_ENERGY] += energy * share
        self._split.append(([k for k, _, _ in pieces], failed | (cancelled << 1)))
        return True

    def merge(self, other: Aggregator) -> None:
        """Add another aggregator's jobs (same parameters) to this one: exact sums."""
        self.counted += other.counted
        for why, n in other.skipped.items():
            self.skipped[why] = self.skipped.get(why, 0) + n
        self.seen_accounts |= other.seen_accounts
        self.seen_users |= other.seen_users
        for key, values in other._ints.items():
            row = self._ints.setdefault(key, [0] * _SLOTS)
            for i, v in enumerate(values):
                row[i] += v
        for key, fractions in other._fracs.items():
            frow = self._fracs.setdefault(key, [Fraction(0)] * _SLOTS)
            for i, f in enumerate(fractions):
                frow[i] += f
        self._split.extend(other._split)

    def _project(self, key: tuple[str, ...], dims: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for d in dims:
            if d == "pi":
                gm = self.params.grant_map
                out.append((gm.pi(key[5]) if gm is not None else "") or UNKNOWN)
            else:
                out.append(key[_FINE.index(d)])
        return tuple(out)

    def rollup(self, dims: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, object]]:
        """Figures per distinct value of ``dims`` (empty dims: the total)."""
        sums: dict[tuple[str, ...], list[Fraction | int]] = {}
        cost: dict[tuple[str, ...], list[Fraction]] = {}  # [cost, unpriced ms]
        card = self.params.ratecard
        prices: dict[tuple[str, str], Fraction | None] = {}
        for source in (self._ints, self._fracs):
            for key, values in source.items():
                g = self._project(key, dims)
                acc = sums.setdefault(g, [0] * _SLOTS)
                for i in range(_SLOTS):
                    acc[i] += values[i]
                c = cost.setdefault(g, [Fraction(0), Fraction(0)])
                pk = (key[3], key[2])
                if pk not in prices:
                    price = card.price(key[3], key[2]) if card is not None else None
                    prices[pk] = None if price is None else Fraction(price)
                price_f = prices[pk]
                if price_f is None:
                    c[1] += values[_ALLOC]
                else:
                    c[0] += values[_ALLOC] * price_f / MS_PER_HOUR
        for keys, flags in self._split:
            for g in {self._project(k, dims) for k in keys}:
                acc = sums.setdefault(g, [0] * _SLOTS)
                acc[_JOBS] += 1
                acc[_FAILED] += flags & 1
                acc[_CANCELLED] += flags >> 1
                cost.setdefault(g, [Fraction(0), Fraction(0)])
        return {g: self._figures(v, cost[g]) for g, v in sorted(sums.items())}

    def _figures(self, v: list[Fraction | int], cost: list[Fraction]) -> dict[str, object]:
        jobs = int(v[_JOBS])
        alloc, measured, busy = Fraction(v[_ALLOC]), Fraction(v[_MEASURED]), Fraction(v[_BUSY])
        kwh = Fraction(v[_ENERGY]) / MJ_PER_KWH
        grid = self.params.grid_intensity_g_per_kwh
        card = self.params.ratecard
        return {
            "jobs": jobs,
            "failed_jobs": int(v[_FAILED]),
            "cancelled_jobs": int(v[_CANCELLED]),
            "failed_share": rounded(Fraction(int(v[_FAILED]), jobs), 4) if jobs else None,
            "cancelled_share": rounded(Fraction(int(v[_CANCELLED]), jobs), 4) if jobs else None,
            "allocated_gpu_hours": rounded(alloc / MS_PER_HOUR, 6),
            "busy_gpu_hours": rounded(busy / MS_PER_HOUR, 6),
            "measured_gpu_hours": rounded(measured / MS_PER_HOUR, 6),
            "measured_share": rounded(measured / alloc, 4) if alloc else None,
            "efficiency": rounded(busy / measured, 4) if measured else None,
            "energy_kwh": rounded(kwh, 6),
            "co2e_kg": rounded(kwh * Fraction(grid) / 1000, 6) if grid is not None else None,
            "cost": rounded(cost[0], 2) if card is not None else None,
            "currency": card.currency if card is not None else None,
            "unpriced_gpu_hours": rounded(cost[1] / MS_PER_HOUR, 6),
        }

    def figures(self) -> dict[str, object]:
        """Totals, groups and chart series of everything added so far."""
        p = self.params
        empty = self._figures([0] * _SLOTS, [Fraction(0), Fraction(0)])
        total = self.rollup(()).get((), empty)
        groups = [
            {"key": dict(zip(p.group_by, k, strict=True)), **f}
            for k, f in self.rollup(p.group_by).items()
        ]
        by_month = {k[0]: f for k, f in self.rollup(("month",)).items()}
        series = {
            "month": [{"month": m, **by_month.get(m, empty)} for m in self._month_names],
            "user": [{"user": k[0], **f} for k, f in self.rollup(("user",)).items()],
        }
        return {"totals": total, "groups": groups, "series": series}

    def notes(self) -> list[str]:
        """Plain-language notes: skipped jobs and filters that matched nothing."""
        out = [f"{n} {why} not counted" for why, n in sorted(self.skipped.items())]
        for a in self.params.accounts:
            if a not in self.seen_accounts:
                out.append(f"account {a!r}: no jobs in this period (unknown or idle account)")
        for u in self.params.users:
            if u not in self.seen_users:
                out.append(f"user {u!r}: no jobs in this period (unknown or idle user)")
        if not self.counted:
            out.append("no jobs counted: the report is empty")
        return out


def aggregate(params: ReportParams, jobs: Iterable[JobUsage]) -> Aggregator:
    """Fold ``jobs`` into an :class:`Aggregator`."""
    agg = Aggregator(params)
    for job in jobs:
        agg.add(job)
    return agg
