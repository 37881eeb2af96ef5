"""Tests of computeproof/httpsink.py and forward_configured's choice of sink, against the
real collector app on uvicorn (in a thread, plain HTTP on the loopback interface)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from collector_helpers import HOSTS, prepare_ledger, serve_config
from tlsharness import free_port

from computeproof.config import Config
from computeproof.errors import CollectorError
from computeproof.forward import forward_configured
from computeproof.httpsink import HttpSink, check_url
from computeproof.keys import Signer, write_key
from computeproof.server.app import create_app
from computeproof.spool import Spool
from computeproof.store import open_store

Sign = Callable[..., list[bytes]]


class Served:
    """The collector app on uvicorn in a thread."""

    def __init__(self, config: Config, port: int) -> None:
        self.config, self.port = config, port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.config), host="127.0.0.1", port=self.port, log_level="warning"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(300):
            if self.server.started:
                return
            time.sleep(0.02)
        raise AssertionError("uvicorn did not start")

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(30)


@pytest.fixture
def config(tmp_path: Path, host_signer: Signer) -> Config:
    cfg = serve_config(str(tmp_path / "ledger.db"), tmp_path)
    prepare_ledger(cfg, (host_signer, HOSTS))
    return cfg


@pytest.fixture
def served(config: Config) -> Iterator[Served]:
    s = Served(config, free_port())
    s.start()
    yield s
    s.stop()


def _size(config: Config) -> int:
    store = open_store(config.db, create=False)
    try:
        return store.size()
    finally:
        store.close()


def test_forward_configured_posts_to_the_collector_when_configured(
    served: Served, config: Config, tmp_path: Path, host_signer: Signer, make_lifecycle: Callable
) -> None:
    write_key(str(tmp_path / "node.key"), host_signer)
    node = Config(
        cluster="c1",
        host_key=str(tmp_path / "node.key"),
        spool_dir=str(tmp_path / "spool"),
        db=str(tmp_path / "no-such-ledger.db"),  # never opened: the collector is used
        collector_url=served.url,
        private_fields=("user",),
    )
    spool = Spool(node.spool_dir)
    events = make_lifecycle("100") + make_lifecycle("101")
    for ev in events:
        spool.write(ev)
    result = forward_configured(node)
    assert result is not None and result.forwarded == len(events) and result.remaining == 0
    assert _size(config) == len(events) and not (tmp_path / "no-such-ledger.db").exists()
    store = open_store(config.db, create=False)
    assert store.openings(str(events[0]["id"]))["user"][1] == '"alice"'  # openings travel too
    store.close()
    for ev in events[:3]:  # the same events again (a re-run epilog): duplicates
        spool.write(ev)
    again = forward_configured(node)
    assert again is not None and again.duplicates == 3 and again.forwarded == 0
    assert _size(config) == len(events)


def test_a_batch_is_split_to_the_limits(
    served: Served, config: Config, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    envs = sign_all(make_lifecycle("100", progress=5)) + sign_all(make_lifecycle("101"))
    with HttpSink(served.url, host_signer, max_envelopes=3) as sink:
        result = sink.append(envs)
    assert [p for p, _, _ in result.accepted] == list(range(len(envs)))
    assert [leaf for _, _, leaf in result.accepted] == list(range(len(envs)))
    with HttpSink(served.url, host_signer, max_bytes=2500) as sink:  # about two envelopes
        again = sink.append(envs)
    assert [p for p, _, _ in again.duplicates] == list(range(len(envs)))


def test_it_waits_for_a_collector_that_comes_back(
    config: Config, host_signer: Signer, make_lifecycle: Callable, sign_all: Sign
) -> None:
    served = Served(config, free_port())
    later = threading.Timer(1.0, served.start)
    later.start()
    try:
        with HttpSink(served.url, host_signer, retry_for=30) as sink:
            result = sink.append(sign_all(make_lifecycle("100")))
        assert len(result.accepted) == 5
    finally:
        later.join()
        served.stop()


def test_it_gives_up_after_retry_for_and_says_why(host_signer: Signer, sign_all: Sign,
                                                   make_lifecycle: Callable) -> None:  # fmt: skip
    pauses: list[float] = []
    sink = HttpSink(
        f"http://127.0.0.1:{free_port()}", host_signer, retry_for=2, sleep=pauses.append
    )
    with sink, pytest.raises(CollectorError, match="cannot reach the collector"):
        sink.append(sign_all(make_lifecycle("100")))
    assert pauses and max(pauses) <= 10  # a growing pause, capped


def test_a_refusal_that_will_not_pass_is_not_retried(
    served: Served, other_signer: Signer, sign_all: Sign, make_lifecycle: Callable
) -> None:
    pauses: list[float] = []
    sink = HttpSink(served.url, other_signer, sleep=pauses.append)
    with sink, pytest.raises(CollectorError, match=r"refused the batch \(401\).*not enrolled"):
        sink.append(sign_all(make_lifecycle("100"), other_signer))
    assert pauses == []


def test_rate_limited_requests_wait_as_told(
    tmp_path: Path, host_signer: Signer, sign_all: Sign, make_lifecycle: Callable
) -> None:
    config = serve_config(str(tmp_path / "l.db"), tmp_path, serve_rate_limit=1)
    prepare_ledger(config, (host_signer, HOSTS))
    served = Served(config, free_port())
    served.start()
    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)
        time.sleep(s)

    try:
        with HttpSink(served.url, host_signer, max_envelopes=1, sleep=sleep) as sink:
            result = sink.append(sign_all(make_lifecycle("100")))  # 5 requests, burst of 2
        assert len(result.accepted) == 5 and pauses and all(p >= 1 for p in pauses)
    finally:
        served.stop()


def test_untrusted_events_stay_in_the_spool(
    served: Served, tmp_path: Path, make_lifecycle: Callable, host_signer: Signer
) -> None:
    write_key(str(tmp_path / "node.key"), host_signer)
    node = Config(host_key=str(tmp_path / "node.key"), spool_dir=str(tmp_path / "spool"),
                  collector_url=served.url)  # fmt: skip
    spool = Spool(node.spool_dir)
    for ev in make_lifecycle("100", nodes=("node9",)):  # node9: the key is not enrolled for it
        spool.write(ev)
    result = forward_configured(node)
    # started, progress and node_done on node9 wait; scheduled and completed (ctl) go
    assert result is not None and result.untrusted == 3 and result.remaining == 3
    assert result.forwarded == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/", "not an https:// URL"),
        ("http://collector.example:8443", "plain HTTP to another host"),
        ("https://host/?x=1", "must not have a query"),
    ],
)
def test_collector_urls(url: str, message: str) -> None:
    with pytest.raises(CollectorError, match=message):
        check_url(url)
    assert check_url("https://ctl:8443/") == "https://ctl:8443"
    assert check_url("http://127.0.0.1:8443") == "http://127.0.0.1:8443"


def test_a_missing_ca_file_is_one_line(tmp_path: Path, host_signer: Signer) -> None:
    with pytest.raises(CollectorError, match="cannot read the collector CA file"):
        HttpSink("https://127.0.0.1:1", host_signer, str(tmp_path / "nope.pem"))
