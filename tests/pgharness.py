"""A private PostgreSQL server for the tests, from Debian's packages (``postgresql``).

One server a test run (started on first use, stopped when the run ends): initdb into a
fresh directory, a free port on 127.0.0.1 and a private Unix socket directory, password
authentication. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` system user the Debian package creates. Each test gets its own schema
(:meth:`PostgresServer.new_url`), so tests share the server but never each other's tables.

    from pgharness import postgres_server   # a fixture: the running server
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

DATABASE = "computeproof"
ROLE = "computeproof"


def find_bindir() -> str | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A running private PostgreSQL server."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="cp-postgres-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user: "
                    "install Debian's postgresql package"
                ) from e
            self._user = "postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*args]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.stdout}")
        return proc

    def start(self) -> None:
        """initdb, then pg_ctl start; waits until it accepts connections."""
        self.socket_dir.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for p in (self.root, self.socket_dir, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            f"{self.bindir}/initdb",
            "-D",
            str(self.data),
            "-U",
            ROLE,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                # a test server: durability off is fine, and keeps the tests fast
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 64MB\n"
            )
        self._run(
            f"{self.bindir}/pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files."""
        with contextlib.suppress(Exception):
            self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """A libpq URL to ``database`` over TCP (with ``schema`` first on the search path)."""
        out = f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"
        if schema is not None:
            out += "?options=" + quote(f"-csearch_path={schema}", safe="")
        return out

    def new_url(self, label: str = "t") -> str:
        """A URL to a new, empty schema of its own."""
        import psycopg

        schema = f"{label}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)


_SERVER: PostgresServer | None = None


def server() -> PostgresServer:
    """The test run's server, started on first use; skips the test when PostgreSQL is not
    installed (`make test` installs it)."""
    global _SERVER
    if _SERVER is None:
        bindir = find_bindir()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        srv = PostgresServer(bindir)
        try:
            srv.start()
        except BaseException:
            srv.stop()
            raise
        atexit.register(srv.stop)
        _SERVER = srv
    return _SERVER


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """The running test server (see :func:`server`)."""
    yield server()
