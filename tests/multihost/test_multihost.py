"""Many hosts, one ledger, on the real cluster: every job recorded end to end through the
collector, each host signing only as itself; then a 200-job burst while the collector is
killed with SIGKILL and PostgreSQL restarts: nothing lost, nothing twice, the log verifies
and every job reconciles with Slurm's accounting."""

from __future__ import annotations

import collections
import datetime as dt
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Site

from computeproof.event import new_event
from computeproof.keys import format_public_key, load_signer
from computeproof.spool import Spool
from computeproof.store.interface import LeafRow

# Each of these exactly once per run: on the controller (scheduled, completed, final_state)
# and on every node of the job (started, node_done). Agent progress events may add more.
CONTROLLER_EVENTS = ("scheduled", "completed", "final_state")
NODE_EVENTS = ("started", "node_done")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
BURST = 200


def key_of(job: int) -> str:
    return f"cptest/{job}#0"


def by_job(leaves: list[LeafRow], ids: list[int]) -> dict[str, list[LeafRow]]:
    """The jobs' leaves (run 0) by job key, progress left out."""
    wanted = {key_of(j) for j in ids}
    out: dict[str, list[LeafRow]] = collections.defaultdict(list)
    for leaf in leaves:
        if leaf.job_key in wanted and leaf.type != "progress":
            out[leaf.job_key].append(leaf)
    return out


def sacct_states(site: Site, ids: list[int]) -> dict[int, tuple[str, list[str]]]:
    """job id -> (state, nodes) from accounting."""
    out = site.cluster.run(
        "sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State,NodeList", "-j", ",".join(map(str, ids))
    ).stdout
    states: dict[int, tuple[str, list[str]]] = {}
    for line in out.splitlines():
        raw, state, nodes = line.split("|")
        if raw.isdigit():
            expanded = [] if nodes.startswith("None") else site.cluster.run(
                "scontrol", "show", "hostnames", nodes).stdout.split()  # fmt: skip
            states[int(raw)] = (state.split()[0] if state else "", expanded)
    return states


def wait_final(site: Site, ids: list[int], timeout: float) -> dict[int, tuple[str, list[str]]]:
    deadline = time.monotonic() + timeout
    done: set[int] = set()
    while time.monotonic() < deadline:
        out = site.cluster.run(
            "sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(map(str, ids))
        ).stdout
        done = {
            int(raw) for raw, _, state in (ln.partition("|") for ln in out.splitlines())
            if raw.isdigit() and state.split() and state.split()[0] in FINAL
        }  # fmt: skip
        if done >= set(ids):
            return sacct_states(site, ids)
        time.sleep(1)
    raise AssertionError(f"jobs not final after {timeout}s: {sorted(set(ids) - done)[:20]}")


def expected(state: tuple[str, list[str]]) -> collections.Counter[tuple[str, str]]:
    """A run's (type, host) events: the controller's three, and each node's two if it ran."""
    _, nodes = state
    want = collections.Counter({(t, os.uname().nodename): 1 for t in CONTROLLER_EVENTS})
    want.update({(t, n): 1 for t in NODE_EVENTS for n in nodes})
    return want


def got(leaves: list[LeafRow]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((x.type, x.host) for x in leaves)


def wait_recorded(
    site: Site, states: dict[int, tuple[str, list[str]]], timeout: float
) -> tuple[list[LeafRow], dict[str, list[LeafRow]]]:
    """Poll the ledger until every job's events are all there; return all leaves and the
    jobs'. (Too many are found by check_exactly_once.)"""
    deadline = time.monotonic() + timeout
    missing: list[int] = list(states)
    while time.monotonic() < deadline:
        leaves = site.leaves()
        jobs = by_job(leaves, list(states))
        missing = [j for j, st in states.items() if expected(st) - got(jobs[key_of(j)])]
        if not missing:
            return leaves, jobs
        time.sleep(1)
    raise AssertionError(f"{len(missing)} jobs not all in the ledger: {missing[:20]}")


def check_exactly_once(
    site: Site, leaves: list[LeafRow], jobs: dict[str, list[LeafRow]],
    states: dict[int, tuple[str, list[str]]],
) -> None:  # fmt: skip
    """No event id twice; per run each controller event once, each node event once per
    node that ran it, from the host that wrote it; no spool holds anything."""
    dupes = [e for e, n in collections.Counter(x.event_id for x in leaves).items() if n > 1]
    assert not dupes, f"event ids in the ledger more than once: {dupes[:10]}"
    bad = {
        str(job): {"state": st[0], "got": dict(got(jobs[key_of(job)])), "want": dict(expected(st))}
        for job, st in states.items()
        if got(jobs[key_of(job)]) != expected(st)
    }
    assert not bad, f"{len(bad)} jobs not recorded exactly once: {dict(list(bad.items())[:5])}"
    for name, path in site.node_spools().items():
        spool = Spool(str(path))
        assert spool.count_pending() == 0, f"{name}'s spool still holds events"
        assert not spool.failures(), f"{name}'s spool has rejected events"


def test_every_job_recorded_through_the_collector(site: Site, job_dir: Path) -> None:
    c = site.cluster
    common = ["-D", str(job_dir), "-o", f"{job_dir}/slurm-%j.out"]
    two_nodes = c.sbatch(*common, "-A", "physics", "-N2", "--gres=gpu:a100:2",
                         "--wrap", "srun sleep 2")  # fmt: skip
    failing = c.sbatch(*common, "--uid=cpbob", "-A", "biology", "--gres=gpu:1", "--wrap",
                       "sleep 1; exit 3")  # fmt: skip
    cancelled = c.sbatch(*common, "--uid=cpcarol", "-A", "chemistry", "--wrap", "sleep 120")
    # cancelled once its Prolog has recorded it (one cancelled during its Prolog may have
    # no `started`: the Prolog is killed)
    deadline = time.monotonic() + 60
    while "started" not in {x.type for x in by_job(site.leaves(), [cancelled])[key_of(cancelled)]}:
        assert time.monotonic() < deadline, "the job to cancel never started"
        time.sleep(0.5)
    c.run("scancel", str(cancelled))
    ids = [two_nodes, failing, cancelled]
    states = wait_final(site, ids, timeout=120)
    assert [states[j][0] for j in ids] == ["COMPLETED", "FAILED", "CANCELLED"], states
    leaves, jobs = wait_recorded(site, states, timeout=90)
    check_exactly_once(site, leaves, jobs, states)
    # each node's events came through its own spool, signed with its own key
    spools = site.node_spools()
    assert set(spools) == {"c1", "c2", os.uname().nodename}, spools
    for node in ("c1", "c2"):
        forwarded = {p.name.split(".")[1] for p in (spools[node] / "forwarded").rglob("*.json")}
        mine = {x.event_id for x in leaves if x.host == node}
        assert mine and mine <= forwarded, f"{node}'s events did not come from its own spool"

    # a receipt exported from the collector's ledger verifies offline against its key
    show = json.loads(site.cli("jobs", "show", str(two_nodes), "--json").stdout)
    assert show["summary"]["state"] == "COMPLETED" and show["summary"]["gpus"] == 4, show["summary"]
    receipt = job_dir / "receipt.json"
    deadline = time.monotonic() + 30
    while site.cli("receipt", "export", str(two_nodes), "-o", str(receipt), check=False).returncode:
        assert time.monotonic() < deadline, "no receipt (no checkpoint covers the job)"
        time.sleep(0.5)
    ledger_key = format_public_key(load_signer(site.config.ledger_key).public_raw)
    verify = subprocess.run(
        [*site_cli(), "receipt", "verify", str(receipt), "--json", "--ledger-key", ledger_key],
        capture_output=True, text=True, cwd=job_dir, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["valid"] is True

    # no ledger file anywhere: the nodes' config names no database
    assert not glob.glob(str(c.dir / "computeproof" / "**" / "*.db"), recursive=True)

    # c1's key cannot speak for c2: the collector refuses it
    spool = Spool(str(job_dir / "forged-spool"))
    spool.ensure()
    forged = new_event("node_done", "cptest", str(failing), failing, "c2", {"exit_code": 0})
    spool.write(forged)
    config = job_dir / "forger.toml"
    keys = c.dir / "computeproof" / "keys"
    config.write_text(
        c.computeproof_config.read_text()
        .replace(str(c.dir / "computeproof" / "spool" / "%n"), str(job_dir / "forged-spool"))
        .replace(str(keys / "%n.key"), str(keys / "c1.key"))
    )
    proc = subprocess.run(
        [*site_cli(), "--config", str(config), "forward", "--json"], capture_output=True,
        text=True, env=c.env, cwd=Path(__file__).parents[2], timeout=120, check=False,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    # untrusted: the key is enrolled, but not for c2; the event waits in its spool
    assert (result["forwarded"], result["failed"], result["untrusted"]) == (0, 0, 1), result
    assert spool.count_pending() == 1
    assert forged["id"] not in {x.event_id for x in site.leaves()}


def site_cli() -> list[str]:
    return [sys.executable, "-m", "slurm_hooks"]


def serve_pid(site: Site) -> int:
    return int((site.collector_dir / "collector.pid").read_text())


def kill_collector(site: Site) -> None:
    """SIGKILL `computeproof serve` (every process of it), as a crash would."""
    pid = serve_pid(site)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the collector outlived SIGKILL"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def restart_collector(site: Site) -> None:
    listen = site.config.serve_listen
    proc = site.collector("up", "--listen", listen, "--cluster", "cptest", "--name", "127.0.0.1",
                          "--name", "localhost")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def restart_postgres(site: Site) -> None:
    bindir = os.path.dirname(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1])
    proc = subprocess.run(
        ["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D",
         str(site.collector_dir / "pg"), "-l", str(site.collector_dir / "log" / "postgres.log"),
         "-m", "fast", "-w", "-t", "60", "restart"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_collector_killed_and_postgres_restarted_during_a_burst(site: Site, job_dir: Path) -> None:
    c = site.cluster
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    common = ["-D", str(job_dir), "-o", f"{job_dir}/slurm-%j.out"]

    def submit(n: int) -> list[int]:
        return [c.sbatch(*common, *(["--gres=gpu:1"] if i % 5 == 0 else []), "--wrap", "true")
                for i in range(n)]  # fmt: skip

    ids = submit(BURST // 3)
    kill_collector(site)
    ids += submit(BURST // 3)  # nodes and controller spool; forwarders retry
    time.sleep(2)
    restart_collector(site)
    ids += submit(BURST // 6)
    restart_postgres(site)  # the collector's connections break under it
    ids += submit(BURST - len(ids))
    assert len(ids) == BURST
    states = wait_final(site, ids, timeout=600)
    leaves, jobs = wait_recorded(site, states, timeout=300)
    check_exactly_once(site, leaves, jobs, states)
    verify = json.loads(site.cli("ledger", "verify", "--json").stdout)
    assert verify["ok"], verify["problems"]
    assert verify["size"] >= len(leaves)
    proc = site.cli("reconcile", "--since", since.strftime("%Y-%m-%dT%H:%M:%S"), "--json",
                    check=False)  # fmt: skip
    assert proc.stdout, proc.stderr
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"], {
        k: out[k][:5] for k in ("missing", "incomplete", "mismatched", "unknown_to_slurm")
    }
