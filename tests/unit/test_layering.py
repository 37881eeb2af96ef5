"""The two packages' shape (issue: the house in the shape of the design): computeproof
knows nothing of Slurm, and every SQL statement lives in the SQLite store."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_computeproof_never_imports_slurm_hooks() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "computeproof").rglob("*.py"))
        if any(m == "slurm_hooks" or m.startswith("slurm_hooks.") for m in _imports(p))
    ]
    assert offenders == []


def test_only_the_sqlite_store_imports_sqlite3() -> None:
    allowed = {REPO / "computeproof" / "store" / "sqlite.py"}
    offenders = [
        str(p.relative_to(REPO))
        for package in ("computeproof", "slurm_hooks")
        for p in sorted((REPO / package).rglob("*.py"))
        if p not in allowed and "sqlite3" in _imports(p)
    ]
    assert offenders == []


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlite3\nfrom slurm_hooks.hooks import main\n")
    assert {"sqlite3", "slurm_hooks.hooks"} <= _imports(bad)


def test_no_empty_packages() -> None:
    # a package appears when its code does
    for package in ("computeproof", "slurm_hooks"):
        for init in (REPO / package).rglob("__init__.py"):
            siblings = [
                p
                for p in init.parent.iterdir()
                if (p.suffix == ".py" and p != init) or (p / "__init__.py").exists()
            ]
            assert siblings or init.read_text().count("\n") > 3, init
