"""Every CPython 3.11+ on this machine: the unit tests and the hook processes under each.

    nox -l                     the sessions, one per interpreter found
    nox -s unit                unit tests under every interpreter (tests/unit)
    nox -s hooks               the hook executables run as Slurm runs them, and their
                               import budget (bench/bench_hook.py), under every interpreter
    nox -s "unit(3.13.0)"      one interpreter (ids are the interpreters' versions)

Interpreters are found, not named: pyenv's (``$PYENV_ROOT/versions/*``, the real binaries,
never the shims, which cost ~80 ms a start), the system's ``/usr/bin/python3.N`` and
``/usr/local/bin/python3.N``. Each gets a virtual environment with the project, every
extra (``all``) and ``dev``, kept in /var/cache/computeproof/nox (else .nox/) across clones
and rebuilt only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
MIN_VERSION = (3, 11)
nox.options.sessions = ["unit", "hooks"]
nox.options.error_on_missing_interpreters = True


def _version(path: Path) -> tuple[int, ...] | None:
    """The interpreter's full version, read from the binary itself (None: not a CPython 3)."""
    try:
        code = "import sys; print(sys.implementation.name, *sys.version_info[:3])"
        out = subprocess.run(
            [str(path), "-S", "-c", code], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or out[0] != "cpython":
        return None
    return tuple(int(x) for x in out[1:])


def interpreters() -> dict[str, Path]:
    """Every CPython >= 3.11 found, by full version ("3.13.0"), each a real binary once."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = sorted(pyenv.glob("versions/*/bin/python3.*"))
    for prefix in (Path("/usr/bin"), Path("/usr/local/bin")):
        candidates += sorted(prefix.glob("python3.*"))
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    for path in candidates:
        if not re.fullmatch(r"python3\.\d+", path.name) or not os.access(path, os.X_OK):
            continue
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        version = _version(path)
        if version is None or version[:2] < MIN_VERSION:
            continue
        label = ".".join(map(str, version))
        if label in found:  # the same version twice (pyenv's and the system's): keep both
            label += "-" + ("system" if str(path).startswith("/usr/") else "pyenv")
        found[label] = path
    return found


INTERPRETERS = interpreters()
# The venvs outlive a clone (CI clones afresh): the machine's cache when root may write it.
_CACHE = Path("/var/cache/computeproof/nox")
VENVS = _CACHE if os.access("/var/cache", os.W_OK) else REPO / ".nox"
PARAMS = [nox.param(str(path), id=label) for label, path in INTERPRETERS.items()]


def _venv(session: nox.Session, interpreter: str) -> Path:
    """A virtual environment for ``interpreter`` with the project's all and dev extras,
    kept in VENVS across runs and clones, a new one when pyproject.toml changes."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    # one venv per interpreter and pyproject.toml, so clones with other requirements never
    # share one
    env = VENVS / f"venv-{hashlib.sha256(interpreter.encode()).hexdigest()[:8]}-{digest}"
    stamp = env / "computeproof-stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return env
    session.run(sys.executable, "-m", "virtualenv", "-q", "--clear", "-p", interpreter,
                str(env), external=True)  # fmt: skip
    session.run(str(env / "bin" / "python"), "-m", "pip", "install", "-q",
                f"{REPO}[all,dev]", external=True)  # fmt: skip
    stamp.write_text(digest)
    return env


@nox.session(python=False)
@nox.parametrize("interpreter", PARAMS)
def unit(session: nox.Session, interpreter: str) -> None:
    """The unit tests under one interpreter (extra arguments go to pytest)."""
    env = _venv(session, interpreter)
    session.run(
        str(env / "bin" / "python"), "-m", "pytest", "tests/unit", "-q", "-p",
        "no:cacheprovider", *session.posargs,
        env={"PYTHONPATH": str(REPO)}, external=True,
    )  # fmt: skip


@nox.session(python=False)
@nox.parametrize("interpreter", PARAMS)
def hooks(session: nox.Session, interpreter: str) -> None:
    """The Prolog and Epilog processes under one interpreter, as a site install runs them
    (``#!INTERPRETER -SE``): every run must exit 0 and spool its event; prints the import
    budget (hook time / bare interpreter start, target <= 2.0) and peak RSS."""
    env = _venv(session, interpreter)
    # the entry-point tests, with the hooks' interpreter switched to this one
    session.run(
        str(env / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/unit/test_hook_interpreters.py",
        env={"PYTHONPATH": str(REPO), "CP_HOOK_PYTHON": interpreter}, external=True,
    )  # fmt: skip
    for hook, agent in (("prolog", []), ("epilog", ["--agent"])):
        out = session.run(
            interpreter, str(REPO / "bench" / "bench_hook.py"), "-n", "60", "--hook", hook,
            "--python", interpreter, *agent, silent=True, external=True,
        )  # fmt: skip
        result = json.loads(str(out))
        session.log(
            f"{hook} on {result['python']}: {result['median_hook_ms']} ms vs "
            f"{result['median_python_S_pass_ms']} ms bare start (ratio {result['ratio']}, "
            f"target <= 2.0), peak RSS {result['peak_rss_mib']} MiB"
        )
        bad = {k: result[k] for k in ("nonzero_exits", "hook_failures") if result[k]}
        if bad or result["events_written"] != result["runs"] + 5:
            session.error(f"{hook} under {interpreter}: {bad or result}")
