"""Which Slurm job a process belongs to, from /proc: cgroup, else process ancestry.

slurmstepd titles itself ``slurmstepd: [JOBID.STEP]``; every task of a job descends from
one. An ancestor only counts when it is owned by a trusted uid (root: slurmstepd runs as
root), so a user cannot claim another job by renaming a process of their own.

A job's cgroup (``.../job_JOBID/...``, cgroup v1 or v2) is used first when present: users
cannot move processes between Slurm's job cgroups. But a user CAN create a cgroup named
``job_N`` wherever they own a subtree (systemd delegates ``user@UID.service`` to its user),
and ``mkdir`` there makes a directory the user owns. So a ``job_N`` component counts only
when its directory in the mounted cgroup filesystem, and every directory above it, is
owned by a trusted uid; when that cannot be checked (hierarchy not mounted, stat failed),
the cgroup proves nothing and process ancestry decides.
"""

from __future__ import annotations

import os
import re
import stat
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


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[frozenset[str], str, str]]:
    """The mounted cgroup hierarchies as (controllers, hierarchy root, mount point).

    controllers is the empty set for the cgroup v2 hierarchy, else the set of v1
    controller names (``name=systemd`` included) as /proc/PID/cgroup lists them."""
    mounts: list[tuple[frozenset[str], str, str]] = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return mounts
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if after[0] == "cgroup2":
            mounts.append((frozenset(), root, mount_point))
        elif after[0] == "cgroup":
            options = set(after[2].split(","))
            controllers = {o for o in options if o not in _MOUNT_OPTIONS and "=" not in o}
            controllers |= {o for o in options if o.startswith("name=")}
            mounts.append((frozenset(controllers), root, mount_point))
    return mounts


# cgroup v1 super options that are not controller names
_MOUNT_OPTIONS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode"}


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


class ProcessTable:
    """Reads /proc (or another root, for tests) to find a process's job."""

    def __init__(
        self,
        proc_root: str = "/proc",
        trusted_uids: frozenset[int] = frozenset({0}),
        mounts: list[tuple[frozenset[str], str, str]] | None = None,
    ):
        self.proc_root = proc_root
        self.trusted_uids = trusted_uids
        self._mounts = mounts

    @property
    def mounts(self) -> list[tuple[frozenset[str], str, str]]:
        """The cgroup hierarchies, read from /proc/self/mountinfo on first use."""
        if self._mounts is None:
            self._mounts = cgroup_mounts()
        return self._mounts

    def _cgroup_dir(self, controllers: str, path: str) -> str | None:
        """Where ``path`` of the hierarchy named by ``controllers`` is mounted, if it is."""
        wanted = frozenset(c for c in controllers.split(",") if c)
        for have, root, mount_point in self.mounts:
            # v2 (no controllers) matches only the v2 mount; a v1 line matches the mount
            # holding all its controllers
            if (not wanted and have) or (wanted and not wanted <= have):
                continue
            if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue
            rest = path[len(root) :] if root != "/" else path
            return mount_point.rstrip("/") + "/" + rest.lstrip("/")
        return None

    def _trusted_chain(self, controllers: str, job_path: str) -> bool:
        """Whether the cgroup directory ``job_path`` and each one above it exist and are
        owned by a trusted uid (so no user created any of them)."""
        directory = self._cgroup_dir(controllers, job_path)
        top = self._cgroup_dir(controllers, "/")
        if directory is None or top is None:
            return False
        top = top.rstrip("/") or "/"
        while True:
            try:
                st = os.lstat(directory)
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in self.trusted_uids:
                return False
            if directory.rstrip("/") == top.rstrip("/") or len(directory) <= len(top):
                return True
            directory = os.path.dirname(directory.rstrip("/"))

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
        """The job whose Slurm-made cgroup holds ``pid`` (see the module docstring)."""
        try:
            with open(
                os.path.join(self.proc_root, str(pid), "cgroup"),
                encoding="utf-8",
                errors="surrogateescape",
            ) as f:
                text = f.read()
        except OSError:
            return None
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            m = _CGROUP_JOB.search(parts[2])
            if m and self._trusted_chain(parts[1], parts[2][: m.end(1)]):
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
