"""A temporary hook site (config, spool, run dir, slurm.conf, gres.conf, fake GPU devices)
and the hook executables run as Slurm runs them: env -i, no PATH, absolute paths."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from computeproof.event import check_event
from computeproof.spool import is_spooled, read_events

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
PROLOG = REPO / "prolog.d" / "computeproof-prolog"
EPILOG = REPO / "epilog.d" / "computeproof-epilog"
PROLOG_CTLD = REPO / "prolog.d" / "computeproof-prolog-slurmctld"
EPILOG_CTLD = REPO / "epilog.d" / "computeproof-epilog-slurmctld"


class Site:
    """A temporary site: config, spool, run dir, slurm.conf + gres.conf, fake devices."""

    def __init__(self, root: Path, extra: str = "") -> None:
        self.root = root
        self.spool = root / "spool"
        self.run = root / "run"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.etc = root / "etc"
        self.etc.mkdir()
        self.dev = root / "dev"
        self.dev.mkdir()
        self.config = root / "config.toml"
        self.config.write_text(
            f'cluster = "cptest"\nspool_dir = "{self.spool}"\nrun_dir = "{self.run}"\n'
            f'slurm_bin = "{self.bin}"\nhost = "ctl"\n{extra}'
        )
        (self.etc / "slurm.conf").write_text("ClusterName=cptest\n")
        (self.etc / "gres.conf").write_text(
            f"NodeName=c1 Name=gpu Type=a100 File={self.dev}/nvidia[0-3]\n"
            f"NodeName=c2 Name=gpu Type=a100 File={self.dev}/nvidia[4-7]\n"
        )
        if os.geteuid() == 0:
            for minor in range(8):
                os.mknod(self.dev / f"nvidia{minor}", 0o600 | 0o020000, os.makedev(195, minor))

    def env(self, name: str, **more: str) -> dict[str, str]:
        text = (FIXTURES / "envdump" / f"{name}.env").read_text()
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "SLURM_CONF" in env:
            env["SLURM_CONF"] = str(self.etc / "slurm.conf")
        env["COMPUTEPROOF_CONFIG"] = str(self.config)
        env.update(more)
        return env

    def fake(self, name: str, script: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)

    def events(self, type: str | None = None) -> list[dict[str, object]]:
        out = []
        new = self.spool / "new"
        for path in sorted(new.iterdir()) if new.is_dir() else []:
            if not is_spooled(path.name):  # a hook's event, or a batch of the collector's
                continue
            for data in read_events(str(path)):
                event = check_event(json.loads(data))
                if type is None or event["type"] == type:
                    out.append(event)
        return out

    def failures(self, where: Path | None = None) -> int:
        """The hook-failures counter in the spool (or in ``where``)."""
        try:
            return int(((where or self.spool) / "hook-failures").read_text())
        except FileNotFoundError:
            return 0


def run(
    exe: Path, env: dict[str, str] | dict[bytes, bytes], timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    """Run a hook executable with exactly ``env`` (bytes values allowed: not UTF-8)."""
    return subprocess.run(
        [str(exe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        errors="backslashreplace",
    )


def payload(event: dict[str, object]) -> dict[str, object]:
    p = event["payload"]
    assert isinstance(p, dict)
    return p
