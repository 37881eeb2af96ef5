"""A test CA and a server certificate for 127.0.0.1 and localhost (cryptography), and a
real collector process (`computeproof serve` on uvicorn) to test against."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SiteCA:
    """Files of a site CA and the collector's certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path) -> SiteCA:
    """A CA, and a server certificate for 127.0.0.1, ::1 and localhost it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ComputeProof test CA"))
        .issuer_name(_name("ComputeProof test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("collector"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ip_address("127.0.0.1")),
                    x509.IPAddress(ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13's default context verifies strictly (VERIFY_X509_STRICT): a leaf
        # needs the key identifier of the CA that signed it
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = SiteCA(directory / "ca.pem", directory / "collector.pem", directory / "collector.key")
    out.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out.key.chmod(0o600)
    return out


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env() -> dict[str, str]:
    """The environment for this checkout's CLI in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("COMPUTEPROOF_CONFIG", None)
    return env


class CollectorProcess:
    """`computeproof serve` in a subprocess, on a fixed port, restartable."""

    def __init__(self, config: Path, port: int, ca: SiteCA, log: Path, processes: int = 1):
        self.config = config
        self.port = port
        self.ca = ca
        self.log = log
        self.processes = processes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The collector's base URL."""
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until /healthz answers over TLS."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "computeproof.cli", "--config", str(self.config),
                 "serve", "--allow-root", "--listen", f"127.0.0.1:{self.port}",
                 "--processes", str(self.processes), "--log-level", "warning"],
                env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        context = ssl.create_default_context(cafile=str(self.ca.ca))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", verify=context, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"collector did not come up: {self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 the collector (and its worker processes)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM), then make sure it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
