"""Jobs of two users whose names, comments, work dirs and output paths are hostile bytes:
every field of every event equals what Slurm's accounting says, no node drains in strict
mode, and `report verify` and `reconcile` agree with sacct (issue 13).

The bytes: newlines and CR, the '|' separator, a forged ``squeue -O`` record of the other
user's job, ``Key=Value`` words for every key the old ``scontrol`` parser read, backslash
escapes and quotes, a valid multi-byte character and bytes that are not UTF-8. The job name
and work dir are recorded exactly (as {"non_utf8": base64} where they are not UTF-8);
accounting stores a byte that is not UTF-8 as '?' and '"' as '`', which is what it is
compared with.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.slurmjson import expand_nodes, slurm_json

SlurmCluster = Any  # tests/integration/conftest.py: the session's cluster handle

pytestmark = pytest.mark.slurm

CLI = [sys.executable, "-m", "slurm_hooks"]
REPO = Path(__file__).resolve().parents[2]
ETC_CONFIG = Path("/etc/computeproof/config.toml")
DRAINED = {"drain", "drng", "drained", "down", "fail", "failg"}
USERS = (("cpalice", "physics"), ("cpbob", "biology"))
KEYS = (
    "JobId",
    "JobName",
    "UserId",
    "Account",
    "QOS",
    "JobState",
    "NodeList",
    "NumNodes",
    "NumCPUs",
    "TRES",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "TimeLimit",
    "ExitCode",
    "WorkDir",
    "Nodes",
    "CPU_IDs",
    "Mem",
    "GRES",
    "Partition",
    "Restarts",
    "ArrayJobId",
    "ArrayTaskId",
    "HetJobId",
    "HetJobOffset",
    "TresPerNode",
    "StdOut",
)


def cli(cluster: SlurmCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `computeproof ARGS` against the cluster's config and ledger."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=cluster.env, cwd=REPO, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"computeproof {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


def names(other_job: int, other_user: str, other_account: str) -> list[bytes]:
    """Hostile names (each under accounting's 255 bytes): a forged squeue record of
    ``other_job``, and Key=Value words for every key the old parser read, in two halves."""
    forged = (
        f"{other_job}|COMPLETED|None|1792|2020-01-01T00:00:00|2020-01-01T00:00:00|"
        f"2020-01-01T02:00:00|c9|9|cpu=9,gres/gpu=8|{other_user}|{other_account}|gpu|"
        f"high|0|1|{other_job}|N/A|N/A|N/A|x"
    )
    half = len(KEYS) // 2
    words = [" ".join(f"{key}=9" for key in keys).encode() for keys in (KEYS[:half], KEYS[half:])]
    return [
        b"a\n" + forged.encode() + b"\r|\\n\xff\xfe",
        b"b " + words[0] + b" \\u0000 \"q\" 's' \xc3\xa9 \xc3\x28|\n",
        b"c\n" + words[1] + b"\r\xff",
    ]


def accounted(value: bytes) -> bytes:
    """A value as accounting stores it: each byte that is not UTF-8 becomes '?', and
    slurmdbd writes '"' as '`'."""
    return value.decode("utf-8", "replace").replace("\ufffd", "?").replace('"', "`").encode()


def recorded(value: object) -> bytes:
    """An event's text field as bytes ({"non_utf8": base64} where it is not UTF-8)."""
    if isinstance(value, dict):
        return base64.b64decode(value["non_utf8"])
    assert isinstance(value, str), value
    return value.encode()


def sacct_raw(cluster: SlurmCluster, job: int) -> dict[str, Any]:
    out = subprocess.run(
        ["sacct", "--json", "-j", str(job)], env=cluster.env, capture_output=True, check=True
    ).stdout
    (rec,) = [
        j for j in slurm_json(out.decode("utf-8", "surrogateescape"))["jobs"] if j["job_id"] == job
    ]
    return rec


def sacct_exit(cluster: SlurmCluster, job: int) -> tuple[int, int]:
    out = cluster.run("sacct", "-X", "-n", "-P", "-o", "ExitCode", "-j", str(job)).stdout
    code, _, sig = out.strip().splitlines()[0].partition(":")
    return int(code), int(sig)


def node_states(cluster: SlurmCluster) -> dict[str, str]:
    out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t").stdout
    return {n: s.rstrip("*~#!%$@^-") for n, s in (line.split() for line in out.splitlines())}


def repoint(target: Path) -> None:
    tmp = ETC_CONFIG.with_name(f".config.toml.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, ETC_CONFIG)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cp-hostile-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def submit(
    cluster: SlurmCluster,
    base: Path,
    user: str,
    account: str,
    name: bytes,
    exit_code: int,
    tag: str,
) -> tuple[int, bytes]:
    """One GPU job of ``user`` with a hostile name, comment, work dir and output path."""
    work = base / os.fsdecode(b"w" + tag.encode() + b"\n|WorkDir=x JobId=1 \r\xff\xfe")
    work.mkdir()
    work.chmod(0o1777)
    argv = [
        b"sbatch",
        b"--parsable",
        b"--uid=" + user.encode(),
        b"-A",
        account.encode(),
        b"-J" + name,
        b"--comment=" + name[::-1],
        b"-D" + os.fsencode(work),
        b"-o" + os.fsencode(work) + b"/o\n|%j.out",
        b"--gres=gpu:1",
        b"--wrap",
        f"sleep 2; exit {exit_code}".encode(),
    ]
    out = subprocess.run(argv, env=cluster.env, capture_output=True, check=True).stdout
    return int(out.split(b";")[0]), os.fsencode(work)


@pytest.fixture(scope="module")
def hostile_jobs(slurm_cluster: SlurmCluster, base: Path) -> dict[int, dict[str, Any]]:
    """Hostile jobs of both users, half of them run with strict = true; their receipts."""
    c = slurm_cluster
    start = int(time.time()) - 1
    victim = c.sbatch(
        "-D",
        str(base),
        "-o",
        "/dev/null",
        "--uid=cpbob",
        "-A",
        "biology",
        "--gres=gpu:1",
        "-J",
        "victim",
        "--wrap",
        "sleep 2",
    )
    jobs: dict[int, dict[str, Any]] = {
        victim: {"name": b"victim", "work": os.fsencode(base), "strict": False}
    }
    strict_config = base / "strict.toml"
    strict_config.write_text(c.computeproof_config.read_text() + "strict = true\n")
    original = Path(os.readlink(ETC_CONFIG))
    try:
        for round_, strict in enumerate((False, True)):
            if strict:
                repoint(strict_config)
            for (user, account), (other, other_account) in zip(USERS, USERS[::-1], strict=True):
                for i, name in enumerate(names(victim, other, other_account)):
                    tag = f"{round_}{user}{i}"
                    job, work = submit(c, base, user, account, name, 3 * (i % 2), tag)
                    jobs[job] = {"name": name, "work": work, "strict": strict, "user": user}
            for job in list(jobs):
                c.wait_job(job, timeout=120)
    finally:
        repoint(original)
    states = node_states(c)
    assert not DRAINED & set(states.values()), f"a node drained: {states}"
    deadline = time.monotonic() + 120
    while True:
        cli(c, "forward")
        shows = {}
        for job in jobs:
            proc = cli(c, "jobs", "show", str(job), "--json", check=False)
            if proc.returncode == 0:
                shows[job] = json.loads(proc.stdout)
        done = {j for j, s in shows.items() if any(e["type"] == "final_state" for e in s["events"])}
        if done == set(jobs):
            break
        assert time.monotonic() < deadline, f"no final_state for {set(jobs) - done}"
        time.sleep(2)
    for job, show in shows.items():
        jobs[job].update(show=show, sacct=sacct_raw(c, job), exit=sacct_exit(c, job))
    jobs[victim]["start"] = start
    return jobs


def events(show: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in show["events"] if e["type"] == kind]


def test_every_field_of_every_event_is_slurms(hostile_jobs: dict[int, dict[str, Any]]) -> None:
    for job, info in hostile_jobs.items():
        show, acct = info["show"], info["sacct"]
        assert show["verification"]["ok"], (job, show["verification"])
        nodes = expand_nodes(acct["nodes"])
        gpus = sum(
            int(t["count"])
            for t in acct["tres"]["allocated"]
            if t["type"] == "gres" and t["name"] == "gpu"
        )
        times = acct["time"]
        (sched,) = events(show, "scheduled")
        sp = sched["payload"]
        assert (sp["user"], sp["account"], sp["partition"], sp["qos"]) == (
            acct["user"],
            acct["account"],
            acct["partition"],
            acct["qos"],
        ), job
        assert (sp["nodes"], sp["gpus"], sp["num_nodes"]) == (nodes, gpus, len(nodes)), job
        assert (sp["submit_epoch"], sp["start_epoch"]) == (times["submission"], times["start"])
        assert recorded(sp["job_name"]) == info["name"], job
        assert recorded(sp["work_dir"]) == info["work"], job
        assert acct["name"].encode("utf-8", "surrogateescape") == accounted(info["name"])
        assert acct["working_directory"].encode("utf-8", "surrogateescape") == accounted(
            info["work"]
        )
        started = events(show, "started")
        assert sorted(e["host"] for e in started) == nodes, job
        for e in started:
            assert recorded(e["payload"]["work_dir"]) == info["work"], job
            assert len(e["payload"]["gpus"]) == gpus // len(nodes)
        done = events(show, "node_done")
        assert sorted(e["host"] for e in done) == nodes, job
        for e in done:
            assert (e["payload"]["exit_code"], e["payload"]["signal"]) == info["exit"], job
        (comp,) = events(show, "completed")
        cp = comp["payload"]
        assert (cp["exit_code"], cp["signal"]) == info["exit"], job
        assert (cp["start_epoch"], cp["end_epoch"]) == (times["start"], times["end"]), job
        assert (cp["gpus"], cp["nodes"], cp["user"]) == (gpus, nodes, acct["user"]), job
        assert cp["elapsed_s"] == times["elapsed"] and cp["gpu_seconds"] == gpus * times["elapsed"]
        (final,) = events(show, "final_state")
        fp = final["payload"]
        assert fp["state"] == acct["state"]["current"], job
        assert (fp["exit_code"], fp["signal"]) == info["exit"], job
        assert (fp["gpus"], fp["nodes"]) == (gpus, nodes), job
        assert (fp["start_epoch"], fp["end_epoch"]) == (times["start"], times["end"]), job
        # the comment is recorded nowhere and changed nothing above
        assert "comment" not in json.dumps(show)
        # the receipt is the job's own, run 0
        assert (show["job_id"], show["run"]) == (str(job), 0)


def test_strict_mode_drains_nothing_and_records_all(
    hostile_jobs: dict[int, dict[str, Any]],
) -> None:
    strict = [j for j, info in hostile_jobs.items() if info["strict"]]
    assert len(strict) == 6
    for job in strict:
        assert hostile_jobs[job]["sacct"]["state"]["current"] in ("COMPLETED", "FAILED")
        kinds = {e["type"] for e in hostile_jobs[job]["show"]["events"]}
        assert {"scheduled", "started", "node_done", "completed", "final_state"} <= kinds


def test_report_verify_and_reconcile_agree_with_sacct(
    slurm_cluster: SlurmCluster, hostile_jobs: dict[int, dict[str, Any]], base: Path
) -> None:
    c = slurm_cluster
    start = min(info.get("start", time.time()) for info in hostile_jobs.values())
    end = max(info["sacct"]["time"]["end"] for info in hostile_jobs.values()) + 2
    utc = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))  # noqa: E731
    report = base / "report.json"
    cli(
        c,
        "report",
        "--from",
        utc(start),
        "--to",
        utc(end),
        "--user",
        "cpalice",
        "--user",
        "cpbob",
        "--format",
        "json",
        "-o",
        str(report),
    )
    doc = json.loads(report.read_text())
    want = sum(
        sum(
            int(t["count"])
            for t in info["sacct"]["tres"]["allocated"]
            if t["type"] == "gres" and t["name"] == "gpu"
        )
        * info["sacct"]["time"]["elapsed"]
        for info in hostile_jobs.values()
    )
    assert doc["totals"]["jobs"] == len(hostile_jobs)
    got = Fraction(str(doc["totals"]["allocated_gpu_hours"]))
    assert abs(got - Fraction(want, 3600)) <= Fraction(1, 10**6), (got, want)
    key = json.loads(cli(c, "ledger", "checkpoint", "--json").stdout)["ledger_key"]
    verify = cli(c, "report", "verify", str(report), "--ledger-key", key, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    proc = cli(c, "reconcile", "--since", utc(start), "--until", utc(end), "--json", check=False)
    out = json.loads(proc.stdout)
    flagged = {
        str(item["job"])
        for kind in ("missing", "incomplete", "mismatched", "unknown_to_slurm")
        for item in out[kind]
    }
    assert not flagged & {str(j) for j in hostile_jobs}, out
