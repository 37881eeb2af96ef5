"""The four hook executables under one interpreter, as Slurm runs them (env -i, no PATH).

The interpreter is ``$CP_HOOK_PYTHON`` (the nox ``hooks`` sessions set it to each CPython
3.11+ found), else the one in the hooks' ``#!`` line; it runs with the ``#!`` line's flags,
as a site install that rewrote the line to name it (conf/INSTALL.md). Covers:

- a normal Prolog run spools its event and imports nothing costly, on that interpreter;
- a broken install (the package does not import) still exits 0 with one line and one
  count in the spool's failure counter, and exits 1 where the config says strict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENVDUMP = REPO / "tests" / "unit" / "slurm_hooks" / "fixtures" / "envdump"
# hook kind: (executable, the environment dump of a real run on the test cluster)
HOOKS = {
    "prolog": (REPO / "prolog.d" / "computeproof-prolog", "prolog.9"),
    "epilog": (REPO / "epilog.d" / "computeproof-epilog", "epilog.9"),
    "prolog_slurmctld": (REPO / "prolog.d/computeproof-prolog-slurmctld", "prolog_slurmctld.21"),
    "epilog_slurmctld": (REPO / "epilog.d/computeproof-epilog-slurmctld", "epilog_slurmctld.18"),
}


def shebang(path: Path) -> list[str]:
    """The interpreter and flags of the script's #! line, the interpreter replaced by
    $CP_HOOK_PYTHON when set."""
    interpreter, *flags = path.read_text().splitlines()[0][2:].split()
    return [os.environ.get("CP_HOOK_PYTHON") or interpreter, *flags]


def slurm_env(dump: str, config: Path, **more: str) -> dict[str, str]:
    """A hook environment captured from the test cluster, pointed at ``config``."""
    text = (ENVDUMP / f"{dump}.env").read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    env.pop("SLURM_CONF", None)
    env["COMPUTEPROOF_CONFIG"] = str(config)
    env.update(more)
    return env


def run_hook(
    script: Path, env: dict[str, str], interpreter_of: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the interpreter and flags of its #! line (or of ``interpreter_of``'s)."""
    argv = [*shebang(interpreter_of or script), str(script)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_the_interpreter_is_cpython_311_or_newer() -> None:
    out = subprocess.run(
        [shebang(HOOKS["prolog"][0])[0], "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert tuple(map(int, out)) >= (3, 11)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake GPU devices need mknod (root)")
def test_prolog_spools_its_event_and_imports_nothing_costly(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for minor in range(4):
        os.mknod(dev / f"nvidia{minor}", 0o600 | 0o020000, os.makedev(195, minor))
    (tmp_path / "slurm.conf").write_text("ClusterName=cptest\n")
    (tmp_path / "gres.conf").write_text(f"NodeName=c1 Name=gpu Type=a100 File={dev}/nvidia[0-3]\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'cluster = "cptest"\nspool_dir = "{tmp_path}/spool"\nrun_dir = "{tmp_path}/run"\n'
    )
    env = slurm_env("prolog.9", config, SLURM_CONF=str(tmp_path / "slurm.conf"))
    # the hook as a site install runs it, plus a report of what it imported
    probe = tmp_path / "probe"
    probe.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from slurm_hooks.hooks import main\n"
        "code = main('prolog')\n"
        "print(code, ' '.join(sorted(sys.modules)))\n"
    )
    proc = run_hook(probe, env, interpreter_of=HOOKS["prolog"][0])
    assert proc.returncode == 0, proc.stderr
    code, *modules = proc.stdout.split()
    assert code == "0", proc.stderr
    costly = {"json", "re", "enum", "subprocess", "typing", "hashlib", "socket", "os"}
    assert costly.isdisjoint(modules), sorted(costly.intersection(modules))
    proc = run_hook(HOOKS["prolog"][0], dict(env, SLURM_JOB_ID="10", SLURM_JOBID="10"))
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    events = [json.loads(p.read_bytes()) for p in (tmp_path / "spool" / "new").glob("*.json")]
    assert [e["type"] for e in events] == ["started", "started"]


def broken_install(tmp_path: Path, kind: str) -> Path:
    """The hook installed as conf/INSTALL.md says, its package directory missing."""
    script = HOOKS[kind][0]
    site = tmp_path / "site-packages"  # where the rewritten line points: empty
    site.mkdir(exist_ok=True)
    dst = tmp_path / "hooks" / script.name
    dst.parent.mkdir(exist_ok=True)
    text = script.read_text()
    lines = [
        f'sys.path.insert(0, "{site}")' if line.startswith("sys.path.insert(0, ") else line
        for line in text.splitlines()
    ]
    dst.write_text("\n".join(lines) + "\n")
    dst.chmod(0o755)
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
    (tmp_path / "spool").mkdir()
    return dst


@pytest.mark.parametrize("kind", sorted(HOOKS))
def test_a_broken_install_exits_0_with_one_line_and_counts_it(tmp_path: Path, kind: str) -> None:
    script = broken_install(tmp_path, kind)
    config = tmp_path / "config.toml"
    config.write_text(f'cluster = "cptest"\nspool_dir = "{tmp_path}/spool"  # local disk\n')
    proc = run_hook(script, slurm_env(HOOKS[kind][1], config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert f"computeproof {kind}: job " in proc.stderr
    assert "cannot import slurm_hooks (ModuleNotFoundError" in proc.stderr
    assert (tmp_path / "spool" / "hook-failures").read_text() == "1\n"
    last = (tmp_path / "spool" / "hook-failures.last").read_text()
    assert last == proc.stderr
    proc = run_hook(script, slurm_env(HOOKS[kind][1], config))
    assert (tmp_path / "spool" / "hook-failures").read_text() == "2\n"


@pytest.mark.parametrize("kind", sorted(HOOKS))
def test_a_broken_install_in_strict_mode_exits_1(tmp_path: Path, kind: str) -> None:
    script = broken_install(tmp_path, kind)
    config = tmp_path / "config.toml"
    config.write_text(f'spool_dir = "{tmp_path}/spool"\nstrict = true\n')
    proc = run_hook(script, slurm_env(HOOKS[kind][1], config))
    assert proc.returncode == 1
    assert "cannot import slurm_hooks" in proc.stderr


def test_a_broken_install_without_a_spool_still_exits_0(tmp_path: Path) -> None:
    script = broken_install(tmp_path, "prolog")
    config = tmp_path / "config.toml"
    config.write_text(f'spool_dir = "{tmp_path}/no/such/dir"\n')
    proc = run_hook(script, slurm_env("prolog.9", config))
    assert proc.returncode == 0
    assert "cannot import slurm_hooks" in proc.stderr
