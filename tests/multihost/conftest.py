"""The native test cluster recording as a site of many hosts (``CP_LEDGER=collector``):
each node (c1, c2) has its own spool and host key and its agent posts over HTTPS to one
collector (`computeproof serve` on PostgreSQL, scripts/collector); the controller's
collector posts its own spool. No ledger file anywhere.

`make integration` runs these after the main suite, on a cluster of their own
(``CP_LEDGER=collector docker-slurm/cluster up``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from computeproof.config import Config, load_config
from computeproof.store import open_store
from computeproof.store.interface import LeafRow
from tests.integration.conftest import SlurmCluster, job_dir, slurm_cluster  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "slurm_hooks"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.slurm)


@dataclass(frozen=True)
class Site:
    """The cluster and its collector: the collector's config reads the ledger's database."""

    cluster: SlurmCluster
    config_path: Path
    config: Config

    @property
    def collector_dir(self) -> Path:
        return self.config_path.parent

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`computeproof ARGS` against the collector's database (as an admin on its host)."""
        proc = subprocess.run(
            [*CLI, "--config", str(self.config_path), *args], capture_output=True, text=True,
            env=self.cluster.env, cwd=REPO, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"computeproof {' '.join(args)} exited {proc.returncode}: "
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def leaves(self) -> list[LeafRow]:
        store = open_store(self.config.db)
        try:
            return list(store.leaves())
        finally:
            store.close()

    def collector(self, *args: str) -> subprocess.CompletedProcess[str]:
        """scripts/collector COMMAND --dir (up, down, status)."""
        return subprocess.run(
            [sys.executable, str(REPO / "scripts" / "collector"), args[0], "--dir",
             str(self.collector_dir), *args[1:]],
            capture_output=True, text=True, env=self.cluster.env, timeout=120, check=False,
        )  # fmt: skip

    def node_spools(self) -> dict[str, Path]:
        root = self.cluster.dir / "computeproof" / "spool"
        return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}


@pytest.fixture(scope="session")
def site(slurm_cluster: SlurmCluster) -> Iterator[Site]:  # noqa: F811
    env: dict[str, Any] = slurm_cluster.env
    if env.get("CP_LEDGER") != "collector":
        pytest.fail(
            "these tests need the cluster in collector mode: "
            "CP_LEDGER=collector docker-slurm/cluster up (make integration does)"
        )
    path = Path(env["CP_COLLECTOR_CONFIG"])
    yield Site(slurm_cluster, path, load_config(str(path), environ={}))
