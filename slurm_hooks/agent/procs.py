"""Which Slurm job a process belongs to, from /proc: cgroup, else process ancestry.

slurmstepd titles itself ``slurmstepd: [JOBID.STEP]``; every task of a job descends from
one. An ancestor only counts when it is owned by a trusted uid (root: slurmstepd runs as
root), so a user cannot claim another job by renaming a process of their own. A job's
cgroup (``.../job_JOBID/...``, cgroup v1 or v2) is used first when present: users cannot
move processes between Slurm's job cgroups.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

STEPD_PREFIX = b"slurmstepd: ["
_CGROUP_JOB = re.compile(r"/job_(\d+)(?:/|$)")


def _stepd_job(cmdline: bytes) -> int | None:
    """The job id in a ``slurmstepd: [JOBID.STEP]`` process title, else None."""
    if not cmdline.startswith(STEPD_PREFIX):
        return None
    digits = cmdline[len(STEPD_PREFIX) :].split(b".", 1)[0].split(b"]", 1)[0]
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class ProcessInfo:
    """A process's owner and parent, from /proc/PID/status."""

    pid: int
    ppid: int
    uid: int


class ProcessTable:
    """Reads /proc (or another root, for tests) to find a process's job."""

    def __init__(self, proc_root: str = "/proc", trusted_uids: frozenset[int] = frozenset({0})):
        self.proc_root = proc_root
        self.trusted_uids = trusted_uids

    def info(self, pid: int) -> ProcessInfo | None:
        """The process's parent and real uid, or None when it does not exist (any more)."""
        try:
            with open(os.path.join(self.proc_root, str(pid), "status"), "rb") as f:
                text = f.read()
        except OSError:
            return None
        ppid = uid = -1
        for line in text.splitlines():
            if line.startswith(b"PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith(b"Uid:"):
                uid = int(line.split()[1])
        if ppid < 0 or uid < 0:
            return None
        return ProcessInfo(pid, ppid, uid)

    def _cmdline(self, pid: int) -> bytes:
        try:
            with open(os.path.join(self.proc_root, str(pid), "cmdline"), "rb") as f:
                return f.read(256)
        except OSError:
            return b""

    def _cgroup_job(self, pid: int) -> int | None:
        try:
            with open(os.path.join(self.proc_root, str(pid), "cgroup")) as f:
                text = f.read()
        except OSError:
            return None
        for line in text.splitlines():
            m = _CGROUP_JOB.search(line.split(":", 2)[-1])
            if m:
                return int(m.group(1))
        return None

    def job_of(self, pid: int) -> int | None:
        """The Slurm job id ``pid`` belongs to, or None when it belongs to no job."""
        job = self._cgroup_job(pid)
        if job is not None:
            return job
        seen = set()
        current = pid
        while current > 1 and current not in seen:
            seen.add(current)
            info = self.info(current)
            if info is None:
                return None
            if info.uid in self.trusted_uids:
                stepd_job = _stepd_job(self._cmdline(current))
                if stepd_job is not None:
                    return stepd_job
            current = info.ppid
        return None

    def stepd_jobs(self) -> set[int]:
        """The jobs that have a slurmstepd (owned by a trusted uid) on this host now."""
        out: set[int] = set()
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            job = _stepd_job(self._cmdline(int(name)))
            if job is not None and job not in out:
                info = self.info(int(name))
                if info is not None and info.uid in self.trusted_uids:
                    out.add(job)
        return out
