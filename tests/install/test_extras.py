"""Install like a site: every declared extra installs from PyPI into a fresh virtual
environment (no pre-release, no local path), and the installed package imports and runs.

Marked ``pypi``: it downloads (pip's cache makes reruns quick); ``make test-matrix`` runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]

pytestmark = pytest.mark.pypi


def test_no_extra_is_empty_and_all_covers_every_feature() -> None:
    assert all(EXTRAS.values()), [name for name, reqs in EXTRAS.items() if not reqs]
    features = set(EXTRAS) - {"all", "dev"}
    (line,) = EXTRAS["all"]
    assert line == f"computeproof[{','.join(sorted(features))}]"


def fresh_venv(path: Path) -> Path:
    """A new virtual environment of this interpreter; returns its python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_extra_installs_from_pypi_in_a_fresh_venv(tmp_path: Path, extra: str) -> None:
    python = fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("PIP_FIND_LINKS", None)  # PyPI only: what a site reaches
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--only-binary=:all:",
         "--no-binary=computeproof", f"{REPO}[{extra}]"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the console script runs from the venv, outside the checkout
    out = subprocess.run(
        [str(python.parent / "computeproof"), "--help"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ledger" in out.stdout
    where = subprocess.run(
        [str(python), "-c", "import computeproof, slurm_hooks; print(computeproof.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not the repo
    assert sys.version_info >= (3, 11)
