"""Many hosts, one ledger, for real: `computeproof serve` processes on uvicorn over TLS
(a test CA), forwarder processes (`computeproof forward`) on four hosts' spools, SQLite
or PostgreSQL (a server the harness starts) behind the collector. The collector is
killed with SIGKILL mid-stream and restarted: no event is lost, none is duplicated, and
`computeproof ledger verify` passes."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pgharness import PostgresServer, server
from tlsharness import CollectorProcess, SiteCA, cli_env, free_port, make_ca

from computeproof.event import new_event
from computeproof.keys import Signer, write_key
from computeproof.ledger import Ledger
from computeproof.spool import Spool
from computeproof.store import open_store

ORIGIN = "computeproof.collector-test.ledger"
HOSTS = ("node1", "node2", "node3", "node4")


def _toml(path: Path, **values: object) -> Path:
    lines = []
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Site:
    """A collector's configuration and four hosts with their keys, spools and configs."""

    def __init__(self, root: Path, db: str, ca: SiteCA, port: int) -> None:
        self.root, self.db, self.ca, self.port = root, db, ca, port
        self.url = f"https://127.0.0.1:{port}"
        self.collector_config = _toml(
            root / "collector.toml",
            cluster="c1",
            db=db,
            ledger_key=str(root / "ledger.key"),
            ledger_origin=ORIGIN,
            host_key=str(root / "collector-host.key"),
            serve_tls_cert=str(ca.cert),
            serve_tls_key=str(ca.key),
            serve_checkpoint_ms=200,
            serve_rate_limit=10_000,
        )
        self.signers = {h: Signer.from_seed(bytes([0x40 + i]) * 32) for i, h in enumerate(HOSTS)}
        self.configs: dict[str, Path] = {}
        with Ledger(open_store(db), ORIGIN, str(root / "ledger.key"), workers=1) as ledger:
            for host, signer in self.signers.items():
                ledger.enroll(signer.public_raw, [host])
        for host, signer in self.signers.items():
            write_key(str(root / f"{host}.key"), signer)
            self.configs[host] = _toml(
                root / f"{host}.toml",
                cluster="c1",
                host=host,
                host_key=str(root / f"{host}.key"),
                spool_dir=str(root / "spool" / host),
                collector_url=self.url,
                collector_ca=str(ca.ca),
                collector_timeout=10,
            )

    def spool(self, host: str) -> Spool:
        """The host's spool."""
        return Spool(str(self.root / "spool" / host))

    def fill(self, per_host: int) -> set[str]:
        """Write ``per_host`` progress events into each host's spool; their ids."""
        ids: set[str] = set()
        for n, host in enumerate(HOSTS):
            sp = self.spool(host)
            for i in range(per_host):
                job = 1000 * (n + 1) + i // 50
                ev = new_event(
                    "progress",
                    "c1",
                    str(job),
                    job,
                    host,
                    {"percent": i % 100},
                    seq=i % 50,
                    time=f"2026-02-01T10:{i // 600:02d}:{i % 60:02d}Z",
                )
                sp.write(ev)
                ids.add(str(ev["id"]))
        return ids

    def forwarder(self, host: str, log: Path) -> subprocess.Popen[bytes]:
        """`computeproof forward --loop` for one host, posting to the collector (from its
        config, or --to for half of them)."""
        args = [
            sys.executable,
            "-m",
            "computeproof.cli",
            "--config",
            str(self.configs[host]),
            "forward",
            "--loop",
            "0.2",
            "--json",
        ]
        if host in ("node3", "node4"):
            args += ["--to", self.url, "--ca", str(self.ca.ca)]
        with open(log, "ab") as out:
            return subprocess.Popen(args, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)


def _log_size(url: str, ca: SiteCA) -> int:
    context = ssl.create_default_context(cafile=str(ca.ca))
    try:
        return int(httpx.get(f"{url}/healthz", verify=context, timeout=2).json()["log_size"])
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The ledger's URL, and how many collector processes serve it."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db"), 1
        return
    request.applymarker(pytest.mark.postgres)
    pg: PostgresServer = server()
    yield pg.new_url("collector"), 2


def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(
    backend: tuple[str, int], tmp_path: Path
) -> None:
    db, processes = backend
    ca = make_ca(tmp_path / "tls")
    site = Site(tmp_path, db, ca, free_port())
    expected = site.fill(2500)
    collector = CollectorProcess(
        site.collector_config, site.port, ca, tmp_path / "collector.log", processes=processes
    )
    forwarders: list[subprocess.Popen[bytes]] = []
    try:
        collector.start()
        forwarders = [site.forwarder(h, tmp_path / f"forward-{h}.log") for h in HOSTS]
        deadline = time.monotonic() + 120
        while _log_size(site.url, ca) < 1000:  # some, not all, of 10,000 are in
            assert time.monotonic() < deadline, collector.tail()
            time.sleep(0.02)
        collector.kill()
        killed_at = _ledger_size(db)
        time.sleep(1.0)  # forwarders find it gone and retry
        collector.start()
        deadline = time.monotonic() + 300
        while any(site.spool(h).count_pending() for h in HOSTS):
            assert time.monotonic() < deadline, [site.spool(h).count_pending() for h in HOSTS]
            assert all(f.poll() is None for f in forwarders), "a forwarder died"
            time.sleep(0.2)
        assert 0 < killed_at < len(expected)  # the kill landed mid-stream
        assert not any(site.spool(h).failures() for h in HOSTS)
    finally:
        for f in forwarders:
            f.send_signal(signal.SIGTERM)
            f.wait(30)
        collector.stop()
    with Ledger(open_store(db, create=False), ORIGIN, str(tmp_path / "ledger.key")) as ledger:
        ids = [leaf.event_id for leaf in ledger.store.leaves()]
    assert len(ids) == len(set(ids)) == len(expected)  # none duplicated
    assert set(ids) == expected  # none lost
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "computeproof.cli",
            "--config",
            str(site.collector_config),
            "ledger",
            "verify",
            "--json",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    logs = "".join((tmp_path / f"forward-{h}.log").read_text() for h in HOSTS)
    assert "Traceback" not in logs and "Traceback" not in collector.tail()


def _ledger_size(db: str) -> int:
    store = open_store(db, create=False)
    try:
        return store.size()
    finally:
        store.close()


def test_the_collector_certificate_is_checked_against_the_site_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "tls")
    other = make_ca(tmp_path / "other")
    site = Site(tmp_path, str(tmp_path / "ledger.db"), ca, free_port())
    ids = site.fill(10)
    collector = CollectorProcess(site.collector_config, site.port, ca, tmp_path / "c.log")
    try:
        collector.start()
        base = [
            sys.executable,
            "-m",
            "computeproof.cli",
            "--config",
            str(site.configs["node1"]),
            "forward",
            "--json",
        ]
        wrong = subprocess.run(
            [*base, "--ca", str(other.ca)],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert wrong.returncode == 2 and "certificate verify failed" in wrong.stderr
        assert site.spool("node1").count_pending() == 10  # all still spooled
        right = subprocess.run(
            base, env=cli_env(), capture_output=True, text=True, timeout=120, check=False
        )
        assert right.returncode == 0, right.stderr
        assert json.loads(right.stdout)["forwarded"] == 10
        plain = subprocess.run(
            [*base, "--to", f"http://10.0.0.1:{site.port}"],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert plain.returncode == 2 and "use https://" in plain.stderr
    finally:
        collector.stop()
    assert len(ids) == 40


def test_serve_refuses_root_unless_told(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the refusal is of root; this test runs as another user")
    out = subprocess.run(
        [sys.executable, "-m", "computeproof.cli", "--db", str(tmp_path / "l.db"), "serve"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "refusing to run as root" in out.stderr and "Traceback" not in out.stderr
