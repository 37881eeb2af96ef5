"""A small ledger of realistic, hostile jobs for the dashboard tests (and the demo).

GPU figures come from the agent's own accumulator (slurm_hooks.agent.accumulate) fed
with made-up NVML readings, so the dashboard reads exactly the payloads the agent
writes. Job names and paths are hostile: HTML, newlines, bidirectional overrides,
non-UTF-8 bytes. Job 105's name is a private field (a salted commitment).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass

from computeproof.envelope import sign_event
from computeproof.event import new_event
from computeproof.keys import Signer
from computeproof.ledger import Ledger
from computeproof.privacy import commit_fields
from computeproof.store.sqlite import SQLiteStore

ORIGIN = "computeproof.demo.ledger"
CLUSTER = "c1"
CTL = Signer.from_seed(bytes([11]) * 32)
NODES = {"node1": Signer.from_seed(bytes([12]) * 32), "node2": Signer.from_seed(bytes([13]) * 32)}
HOSTILE_NAME = '<script>alert("x")</script>\n\u202eevil <b>bold</b> & "quoted"'
NON_UTF8_NAME = base64.b64encode(b"bad\xffname\x1b[31m").decode()
HOSTILE_PATH = "/scratch/alice/out\n<img src=x onerror=alert(1)>.bin"
PRIVATE_FIELDS = ("job_name",)
T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z in ms


@dataclass
class DemoJob:
    """One job of the demo ledger and what its page must show."""

    job_id: int
    user: str
    account: str
    state: str | None  # None: still running
    node: str = "node1"
    partition: str = "gpu"
    job_name: object = "train"
    agent: bool = False  # GPU figures from the agent's accumulator
    artifacts: bool = False

    @property
    def key(self) -> str:
        return f"{CLUSTER}/{self.job_id}#0"


def _iso(ms: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def agent_payloads(
    job: DemoJob, start_ms: int, samples: int = 61, every: int = 20
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """(progress payloads, node_done payload) from the agent's accumulator fed with
    readings of two GPUs: GPU 0 busy and hot, GPU 1 idle then busy."""
    from slurm_hooks.agent.accumulate import JobAccumulator
    from slurm_hooks.agent.binding import Binding, BoundGpu
    from slurm_hooks.agent.nvml import GpuInfo, GpuReading

    binding = Binding(
        CLUSTER,
        str(job.job_id),
        job.job_id,
        0,
        1000,
        job.user,
        job.node,
        (BoundGpu(0, 0, "/dev/nvidia0"), BoundGpu(1, 1, "/dev/nvidia1")),
        _iso(start_ms),
    )
    acc = JobAccumulator(binding, job.node, 5000)
    info = {
        m: GpuInfo(
            m,
            m,
            f"GPU-{job.node}-{m}-0000",
            "NVIDIA A100-SXM4-80GB",
            f"00000000:0{m + 7}:00.0",
            80 * 2**30,
        )
        for m in (0, 1)
    }
    energy = {0: 1_000_000, 1: 2_000_000}
    progress: list[dict[str, object]] = []
    for k in range(samples):
        t = start_ms + 5000 * k
        readings = {}
        for m in (0, 1):
            util = 90 + k % 10 if m == 0 else (0 if k < samples // 2 else 60)
            power_mw = 300_000 if m == 0 else (60_000 if k < samples // 2 else 200_000)
            energy[m] += power_mw * 5  # mJ over 5 s
            readings[m] = GpuReading(
                minor=m,
                utilization=util,
                memory_used=(20 + k // 4) * 2**30 if m == 0 else 2**30 * 3,
                power_mw=power_mw,
                energy_mj=energy[m],
            )
        acc.add_sample(t, readings, info, {}, lambda pid: None)
        if k and k % every == 0:
            s = acc.summary()
            progress.append(
                {
                    "source": "agent",
                    "time_ms": t,
                    "first_sample_ms": s["first_sample_ms"],
                    "sample_interval_ms": 5000,
                    "totals": s["totals"],
                    "gpus": s["gpus"],
                }
            )
    return progress, {"gpu_summary": acc.summary(), "gpu_summary_source": "agent"}


def job_events(job: DemoJob, index: int) -> list[dict[str, object]]:
    """The job's lifecycle events in log order."""
    start = T0 + index * 3_600_000
    samples = 61
    end = start + 5000 * (samples - 1)
    name = {"non_utf8": NON_UTF8_NAME} if job.job_name == "NON_UTF8" else job.job_name
    jid, job_s = job.job_id, str(job.job_id)
    ev = [
        new_event(
            "scheduled",
            CLUSTER,
            job_s,
            jid,
            "ctl",
            {
                "user": job.user,
                "account": job.account,
                "partition": job.partition,
                "job_name": name,
                "work_dir": f"/home/{job.user}/run\n2",
                "nodes": [job.node],
                "gpus": 2,
                "tres_allocated": {"gres/gpu": 2, "gres/gpu:a100": 2},
                "submit_time": _iso(start - 60_000),
                "start_time": _iso(start),
            },
            time=_iso(start),
        )
    ]
    ev.append(
        new_event(
            "started",
            CLUSTER,
            job_s,
            jid,
            job.node,
            {
                "gpus": [
                    {"minor": 0, "uuid": f"GPU-{job.node}-0-0000"},
                    {"minor": 1, "uuid": f"GPU-{job.node}-1-0000"},
                ]
            },
            time=_iso(start + 1000),
        )
    )
    done: dict[str, object] | None = None
    if job.agent:
        progress, done = agent_payloads(job, start, samples)
        for seq, p in enumerate(progress):
            ev.append(
                new_event(
                    "progress",
                    CLUSTER,
                    job_s,
                    jid,
                    job.node,
                    p,
                    seq=seq + 1,
                    time=_iso(int(p["time_ms"])),
                )
            )  # type: ignore[call-overload]
        ev.append(
            new_event(
                "progress",
                CLUSTER,
                job_s,
                jid,
                job.node,
                {"source": "job", "percent": 50, "message": HOSTILE_NAME},
                seq=0,
                time=_iso(start + 60_000),
            )
        )
    if job.artifacts:
        ev.append(
            new_event(
                "artifact",
                CLUSTER,
                job_s,
                jid,
                job.node,
                {
                    "artifacts": [
                        {"path": HOSTILE_PATH, "sha256": "ab" * 32, "size": 1234},
                        {"path": {"non_utf8": NON_UTF8_NAME}, "sha256": "cd" * 32, "size": 5},
                    ]
                },
                time=_iso(end - 1000),
            )
        )
    if job.state is None:
        return ev
    ev.append(
        new_event(
            "node_done",
            CLUSTER,
            job_s,
            jid,
            job.node,
            done or {"gpu_summary_source": "none"},
            time=_iso(end),
        )
    )
    ev.append(
        new_event(
            "completed",
            CLUSTER,
            job_s,
            jid,
            "ctl",
            {
                "state": job.state,
                "exit_code": "0:0" if job.state == "COMPLETED" else "1:0",
                "start_time": _iso(start),
                "end_time": _iso(end),
                "elapsed_s": (end - start) // 1000,
                "gpus": 2,
                "nodes": [job.node],
                "gpu_model": "a100",
            },
            time=_iso(end + 1000),
        )
    )
    return ev


DEMO_JOBS = [
    DemoJob(
        100, "alice", "physics", "COMPLETED", job_name=HOSTILE_NAME, agent=True, artifacts=True
    ),
    DemoJob(101, "bob", "biology", "FAILED", node="node2", job_name="NON_UTF8", agent=True),
    DemoJob(102, "alice", "physics", "CANCELLED"),
    DemoJob(103, "carol", "chemistry", "TIMEOUT", node="node2"),
    DemoJob(104, "alice", "physics", None),
    DemoJob(105, "dave", "astro", "COMPLETED", job_name="secret-project", agent=True),
]


def filler_jobs(n: int, first: int = 1000) -> list[DemoJob]:
    """``n`` plain jobs for paging, users and states cycling."""
    users = ("alice", "bob", "carol", "erin")
    states = ("COMPLETED", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
    return [
        DemoJob(
            first + i,
            users[i % 4],
            ("physics", "biology")[i % 2],
            states[i % 5],
            node=("node1", "node2")[i % 2],
            partition=("gpu", "debug")[i % 3 == 0],
        )
        for i in range(n)
    ]


def open_demo_ledger(directory: str) -> Ledger:
    """The demo ledger in ``directory`` (created empty if missing)."""
    led = Ledger(
        SQLiteStore(os.path.join(directory, "ledger.db")),
        ORIGIN,
        os.path.join(directory, "ledger.key"),
        workers=1,
    )
    return led


def append_jobs(led: Ledger, jobs: Sequence[DemoJob], offset: int = 0) -> None:
    """Sign and append the jobs' events (job 105's name committed as a private field)."""
    for i, job in enumerate(jobs):
        envelopes, openings = [], []
        for ev in job_events(job, offset + i):
            payload = ev["payload"]
            ops: dict[str, dict[str, object]] = {}
            if job.job_id == 105:
                payload, ops = commit_fields(
                    payload,
                    PRIVATE_FIELDS,
                    str(ev["id"]),  # type: ignore[arg-type]
                    CTL.salt_secret,
                )
            signer = CTL if ev["host"] == "ctl" else NODES[str(ev["host"])]
            envelopes.append(sign_event({**ev, "payload": payload}, signer))
            openings.append(ops)
        result = led.append(envelopes, openings)
        assert not result.rejected and not result.untrusted, (result.rejected, result.untrusted)


def build_demo(directory: str, fillers: int = 120) -> str:
    """Create the demo ledger in ``directory``; returns the ledger file's path."""
    with open_demo_ledger(directory) as led:
        led.enroll(CTL.public_raw, ["ctl"])
        for host, signer in NODES.items():
            led.enroll(signer.public_raw, [host])
        append_jobs(led, filler_jobs(fillers))
        append_jobs(led, DEMO_JOBS, offset=fillers)  # the newest jobs
        led.checkpoint()
    return os.path.join(directory, "ledger.db")
