"""Regression tests for issue 13 items 4 and 5 ("agent hardening"): every caller is hostile.

Each test names the break it guards against; each failed on the code before the fix.
Callers that must belong to a job run as a task of a 'slurmstepd: [101.0]' process (see
conftest.in_job_command); the rest talk to the socket from the test process itself.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, Clock, Script, bind, in_job_command, spooled, write_config
from fakenvml.build import gpu_line

from computeproof.config import Config
from computeproof.errors import AgentError
from slurm_hooks.agent import binding as binding_module
from slurm_hooks.agent import server as server_module
from slurm_hooks.agent.accumulate import GpuTotals
from slurm_hooks.agent.binding import BindingError
from slurm_hooks.agent.client import AgentUnavailable, request
from slurm_hooks.agent.daemon import Agent
from slurm_hooks.agent.procs import ProcessTable
from slurm_hooks.agent.ratelog import RateLimitedLog, printable
from slurm_hooks.agent.sampler import Sampler
from slurm_hooks.agent.server import AgentServer

JOBTOOL = str(REPO / "bin" / "computeproof-job")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def raw_request(
    path: str, payload: bytes, fds: list[int] | None = None, timeout: float = 20.0
) -> bytes:
    """Send ``payload`` (with ``fds`` on its first byte) and return what comes back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            if fds:
                socket.send_fds(sock, [payload[:1]], fds)
                sock.sendall(payload[1:])
            else:
                sock.sendall(payload)
        except OSError:
            pass  # the agent may refuse and close before reading it all
        data = b""
        try:
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data


def reply_of(data: bytes) -> dict[str, object]:
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:200]
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


# -- descriptors (issue 13, 4) ------------------------------------------------------------


def test_descriptors_of_failing_requests_are_closed(
    served: Agent, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: descriptors passed with a request over 64 KiB, or one that timed out, were
    never closed; 320 such requests exhausted the agent's 20,000 descriptors."""
    monkeypatch.setattr(server_module, "READ_DEADLINE_S", 0.3, raising=False)
    sock = config.agent_socket_path("c1")
    victim = tmp_path / "f"
    victim.write_bytes(b"x")
    mine = [os.open(victim, os.O_RDONLY) for _ in range(4)]
    try:
        raw_request(sock, b'{"op": "gpus"}\n')  # settle lazily opened files first
        before = open_fds()
        cases = [
            (b"x" * (70 * 1024), 20, "longer than 65536 bytes"),
            (b'{"op": "gpus"', 3, "no complete request line"),  # no newline: times out
            (b"{not json\n", 20, "not JSON"),
            (b"[" * 60_000 + b"\n", 20, "deeper than 32"),
            (b'{"op": "progress", "percent": 1}\n', 20, "takes no open files"),
        ]
        replies = [
            (raw_request(sock, payload, mine), expected)
            for payload, n, expected in cases
            for _ in range(n)
        ]
        assert open_fds() - before <= 2, "descriptors leaked"
        for data, expected in replies:
            reply = reply_of(data)
            assert reply["ok"] is False and expected in str(reply["error"]), reply
    finally:
        for fd in mine:
            os.close(fd)


def test_too_many_descriptors_are_refused_and_closed(served: Agent, config: Config) -> None:
    """More descriptors than MAX_FDS: the kernel drops the extra ones, the agent closes
    the rest and says why."""
    before = open_fds()
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(server_module.MAX_FDS + 8)]
    try:
        reply = reply_of(raw_request(config.agent_socket_path("c1"), b'{"op": "gpus"}\n', fds))
    finally:
        for fd in fds:
            os.close(fd)
    assert reply["ok"] is False and "descriptors" in str(reply["error"])
    assert open_fds() - before <= 2


def test_an_unreadable_bindings_directory_ends_no_job(
    config: Config, script: Script, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: with its descriptors exhausted the agent could not list or read the
    bindings, took running jobs as ended, and lost their measurement."""
    bind(config, "c1", 101, [0])
    bind(config, "c1", 102, [1])
    script.write(gpu_line(0, 0, util=50, energy=0) + gpu_line(1, 1, util=20, energy=0))
    agent = Agent(config, "c1", sampler=Sampler(clock=clock), clock=clock)
    clock.at(0)
    agent.pass_once()
    real_read = binding_module.read_binding

    def emfile_for_101(path: str) -> object:
        if path.endswith("/101.json"):
            raise BindingError(f"cannot read binding {path}: Too many open files")
        return real_read(path)

    with monkeypatch.context() as patched:
        patched.setattr(binding_module, "read_binding", emfile_for_101)
        clock.at(5000)
        agent.pass_once()
        assert sorted(agent.jobs) == [101, 102]

        def no_listing(path: str) -> list[str]:
            raise OSError(errno.EMFILE, "Too many open files")

        patched.setattr(binding_module.os, "listdir", no_listing)
        clock.at(10_000)
        agent.pass_once()
        assert sorted(agent.jobs) == [101, 102]
    clock.at(15_000)
    agent.pass_once()
    g = agent.summary(101)["gpus"][0]  # type: ignore[index]
    assert (g["measured_ms"], g["unmeasured_ms"], g["samples"]) == (15_000, 0, 4), g  # nothing lost
    agent.sampler.close()


# -- connections, size, nesting, logs (issue 13, 5) ---------------------------------------


def test_connections_are_capped_per_uid(
    served: Agent, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 1,000 idle clients held 1,000 threads. Now a uid gets a few connections
    and the rest an immediate one-line refusal that says to retry."""
    for name in ("MAX_CONNECTIONS_PER_UID", "MAX_ROOT_CONNECTIONS"):
        monkeypatch.setattr(server_module, name, 4, raising=False)
    path = config.agent_socket_path("c1")
    idle = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            idle.append(s)
        time.sleep(0.3)
        handlers = [t for t in threading.enumerate() if t.name == "computeproof-request"]
        assert len(handlers) <= 4
        started = time.monotonic()
        refusals = [reply_of(raw_request(path, b'{"op": "gpus"}\n')) for _ in range(20)]
        assert time.monotonic() - started < 5
        for reply in refusals:
            assert reply["ok"] is False and reply["retry"] is True
            assert "busy" in str(reply["error"]), reply
        handlers = [t for t in threading.enumerate() if t.name == "computeproof-request"]
        assert len(handlers) <= 4
        # the job tool's client waits for a slot instead of failing
        closer = threading.Timer(1.0, lambda: [s.close() for s in idle])
        closer.start()
        reply = request(path, {"op": "gpus"}, timeout=5, retry_s=15)
        assert reply["ok"] is True
        closer.join()
    finally:
        for s in idle:
            s.close()


def test_total_connections_are_capped_and_root_keeps_a_share(
    served: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 6, raising=False)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS_PER_UID", 2, raising=False)
    server: AgentServer = served.test_server  # type: ignore[attr-defined]
    assert [server._admit(uid) for uid in (1000, 1000, 1001, 1001, 1002, 1002)] == [None] * 6
    assert "uid 1000 already has 2" in str(server._admit(1000))
    assert "6 connections already open" in str(server._admit(1003))
    assert server._admit(0) is None  # the Epilog is not shut out by users
    server._release(1002)
    assert server._admit(1003) is None


def test_nested_json_gets_one_line_and_no_traceback(
    served: Agent,
    config: Config,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: 60,000 nested '[' got no reply and logged a RecursionError traceback each
    time (200 requests grew the log by 270 KB)."""
    caplog.set_level(logging.WARNING, logger="computeproof.agent")
    path = config.agent_socket_path("c1")
    for payload in (
        b"[" * 60_000 + b"\n",
        b'{"a":' * 10_000 + b"\n",
        b"[" * 33 + b"]" * 33 + b"\n",
    ):
        for _ in range(40):
            reply = reply_of(raw_request(path, payload))
            assert reply == {"ok": False, "error": "request nests arrays or objects deeper than 32"}
    # strings do not count as nesting: a deep-looking message is still an ordinary request
    reply = reply_of(
        raw_request(path, json.dumps({"op": "gpus", "x": "[" * 5000}).encode() + b"\n")
    )
    assert reply["ok"] is True
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" not in err + out + logged and "RecursionError" not in err + out + logged
    assert len(caplog.records) <= 6, "refusals are logged at most 5 times per cause per minute"


def test_refusals_are_logged_escaped_and_rate_limited(
    served: Agent, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="computeproof.agent")
    path = config.agent_socket_path("c1")
    for _ in range(100):
        reply_of(raw_request(path, b'{"op": "evil\\nINFO forged line\\u001b[2J\\udcff"}\n'))
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 5
    for line in lines:
        assert "\n" not in line and "\x1b" not in line and "\udcff" not in line


def test_rate_limited_log_says_what_it_held_back() -> None:
    now = [0.0]
    records: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("computeproof.test.ratelog")
    logger.addHandler(Sink())
    logger.propagate = False
    limited = RateLimitedLog(logger, burst=2, window_s=10, clock=lambda: now[0])
    written = [limited.warning("cause a", "a %d", i) for i in range(5)]
    assert written == [True, True, False, False, False]
    assert limited.warning("cause b", "b") is True  # causes are counted apart
    now[0] = 11.0
    assert limited.warning("cause a", "a again") is True
    assert records == ["a 0", "a 1", "b", "cause a: 3 more like this in the last 10 s not logged",
                       "a again"]  # fmt: skip


def test_printable_escapes_every_control_character() -> None:
    assert printable("a\nb\r\x1b[2J\x00\udcff\u202e") == "a\\nb\\r\\x1b[2J\\x00\\udcff\\u202e"
    assert printable("x" * 300, 10) == "xxxxxxxxxx...[290 more characters]"


# -- artifacts (issue 13, 5) --------------------------------------------------------------

ARTIFACT_CLIENT = """
import json, os, socket, sys, time
path, spec = sys.argv[1], json.loads(sys.argv[2])
fds = [os.open(p, os.O_RDONLY) for p in spec["open"]]
line = json.dumps({"op": "artifact", "paths": spec["claim"]}).encode() + b"\\n"
s = socket.socket(socket.AF_UNIX)
s.connect(path)
socket.send_fds(s, [line], fds)
if spec.get("leave_after") is not None:
    time.sleep(spec["leave_after"])
    print("{}")
    sys.exit(0)
data = b""
while b"\\n" not in data:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode())
"""


def artifact_in_job(
    config: Config, open_paths: list[str], claim: list[str], leave_after: float | None = None
) -> dict[str, object]:
    spec = json.dumps({"open": open_paths, "claim": claim, "leave_after": leave_after})
    argv = [sys.executable, "-c", ARTIFACT_CLIENT, config.agent_socket_path("c1"), spec]
    done = subprocess.run(in_job_command(101, argv), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert isinstance(reply, dict)
    return reply


def sparse(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def test_an_artifact_over_the_request_limit_is_refused_unread(
    served: Agent, tmp_path: Path
) -> None:
    """Before: an artifact request on a 20 GiB sparse file cost 82 CPU-seconds (the
    default limit is 16 GiB a request)."""
    big = sparse(tmp_path / "big.bin", 20 << 30)
    started = time.process_time()
    reply = artifact_in_job(served.config, [big], [big])
    assert reply["ok"] is False, reply
    assert "over the 17179869184 one request may have hashed (artifact_max_bytes" in str(
        reply["error"]
    )
    assert time.process_time() - started < 5  # the agent runs in this process


def test_artifact_bytes_are_bounded_per_job(served: Agent, tmp_path: Path) -> None:
    served.config = dataclasses.replace(served.config, artifact_job_bytes=3000)
    small = tmp_path / "small.bin"
    small.write_bytes(b"s" * 2000)
    assert artifact_in_job(served.config, [str(small)], [str(small)])["ok"] is True
    reply = artifact_in_job(served.config, [str(small)], [str(small)])
    assert reply["ok"] is False and "limit of 3000 (artifact_job_bytes" in str(reply["error"])
    assert served.summary(101)["artifact_bytes"] == 2000


def test_artifact_hashing_stops_when_the_client_goes(served: Agent, tmp_path: Path) -> None:
    """Before: hashing went on to the end of the file after the client (and, in the
    report, the job) had gone: 70 s of it."""
    huge = sparse(tmp_path / "huge.bin", 15 << 30)  # minutes of hashing, under the limit
    threads = threading.active_count()
    artifact_in_job(served.config, [huge], [huge], leave_after=0.5)
    deadline = time.monotonic() + 10
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads, "still hashing for a client that left"
    assert served.socket_stats.requests.get(("artifact", "Cancelled")) == 1
    assert not [e for e in spooled_or_none(served.config) if e["type"] == "artifact"]


def spooled_or_none(config: Config) -> list[dict[str, object]]:
    return spooled(config) if os.path.isdir(os.path.join(config.spool_dir, "new")) else []


def test_artifact_hashing_stops_when_the_job_ends(
    served: Agent, config: Config, clock: Clock, tmp_path: Path
) -> None:
    huge = sparse(tmp_path / "huge.bin", 15 << 30)
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.update(artifact_in_job(served.config, [huge], [huge]))
    )
    worker.start()
    time.sleep(1.0)
    os.unlink(config.binding_path("c1", 101))  # the Epilog
    clock.at(5000)
    served.pass_once()
    worker.join(10)  # 15 GiB take minutes to hash; stopping takes a chunk (1 MiB)
    still_hashing = worker.is_alive()
    worker.join(300)
    assert not still_hashing, "hashing went on after the job ended"
    assert result["ok"] is False and "job 101 ended" in str(result["error"]), result


def test_artifact_path_is_checked_against_the_descriptor(served: Agent, tmp_path: Path) -> None:
    """Before: the path recorded was whatever the client said, next to the hash of the
    descriptor it passed."""
    real = tmp_path / "real.bin"
    real.write_bytes(b"real")
    other = tmp_path / "other.bin"
    other.write_bytes(b"other")
    reply = artifact_in_job(
        served.config, [str(real), str(real), str(real)], [str(real), str(other), "rel/x"]
    )
    assert reply["ok"] is True, reply
    recorded = reply["event"]["payload"]["artifacts"]  # type: ignore[index]
    assert [a["path_verified"] for a in recorded] == [True, False, False]
    assert {a["size"] for a in recorded} == {4}


def test_a_file_that_changes_while_hashed_is_refused(served: Agent, tmp_path: Path) -> None:
    growing = tmp_path / "log.txt"
    growing.write_bytes(b"x" * (256 << 20))
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"y" * 4096)
                f.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        reply = artifact_in_job(served.config, [str(growing)], [str(growing)])
    finally:
        stop.set()
        writer.join()
    assert reply["ok"] is False and "changed while it was hashed" in str(reply["error"])


# -- hostile text (issue 13) ----------------------------------------------------------------


def test_hostile_progress_text_and_artifact_names(
    served: Agent, config: Config, tmp_path: Path
) -> None:
    """Newlines, terminal escapes and bytes that are not UTF-8 change nothing but their
    own field; the job tool prints one escaped line per file."""
    config_path = write_config(config, tmp_path)
    env = dict(os.environ, COMPUTEPROOF_CONFIG=config_path, SLURMD_NODENAME="c1")
    message = "loss 0.1\ncomputeproof: receipt verified: OK\x1b[2J\udcff"
    done = subprocess.run(
        in_job_command(101, [JOBTOOL, "progress", "--percent", "5", "--message", message]),
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["recorded progress (seq 0)"]
    name = os.fsdecode(b"out\nf4k3 1234 passwd\x1b[31m\xff.bin")
    hostile = tmp_path / name
    hostile.write_bytes(b"data")
    done = subprocess.run(
        in_job_command(101, [JOBTOOL, "artifact", str(hostile)]),
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split(b"\n")
    assert len(lines) == 2 and lines[1] == b"", done.stdout
    assert b"\\n" in lines[0] and b"\\x1b" in lines[0] and b"\\udcff" in lines[0]
    events = {e["type"]: e for e in spooled(config)}
    progress = events["progress"]["payload"]
    assert progress["message"] == {"non_utf8": _b64(os.fsencode(message))}  # type: ignore[index]
    artifact = events["artifact"]["payload"]["artifacts"][0]  # type: ignore[index]
    assert artifact["path"] == {"non_utf8": _b64(os.fsencode(str(hostile)))}
    assert artifact["path_verified"] is True and artifact["size"] == 4


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


# -- the job tool while the agent restarts (issue 13, 9) ------------------------------------


def test_job_tool_waits_for_an_agent_that_restarts(
    config: Config, script: Script, clock: Clock, tmp_path: Path
) -> None:
    """Before: a progress call made while the agent restarted was lost (no retry)."""
    bind(config, "c1", 101, [0])
    script.write(gpu_line(0, 0, util=50, energy=100))
    sock = config.agent_socket_path("c1")
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)  # a socket file nobody listens on: the old agent died
    stale.close()
    env = dict(os.environ, COMPUTEPROOF_CONFIG=write_config(config, tmp_path))
    env["SLURMD_NODENAME"] = "c1"
    call = subprocess.Popen(
        in_job_command(101, [JOBTOOL, "progress", "--percent", "7"]),  # waits 30 s
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)
    assert call.poll() is None, call.communicate()
    agent = Agent(
        config, "c1", sampler=Sampler(clock=clock), clock=clock,
        processes=ProcessTable(trusted_uids=frozenset({0, os.getuid()})),
    )  # fmt: skip
    agent.pass_once()
    server = AgentServer(sock, agent)
    server.start()
    try:
        out, err = call.communicate(timeout=60)
    finally:
        server.stop()
        agent.sampler.close()
    assert call.returncode == 0, err
    assert out.strip() == "recorded progress (seq 0)"
    assert [e["payload"]["percent"] for e in spooled(config)] == [7]  # type: ignore[index]


def test_request_gives_up_after_its_wait(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match=r"no agent socket .* \(tried for 1 s\)"):
        request(str(tmp_path / "none.sock"), {"op": "gpus"}, retry_s=1.0)
    assert 0.9 < time.monotonic() - started < 10
    with pytest.raises(AgentError, match="no agent socket"):  # the Epilog never waits
        request(str(tmp_path / "none.sock"), {"op": "gpus"})


# -- energy read less often, never lost (issue 14, 8) ----------------------------------------


def test_energy_counter_read_every_interval_and_fresh_at_the_end(
    config: Config, script: Script, clock: Clock
) -> None:
    cfg = dataclasses.replace(config, energy_interval=30, sample_interval=5, progress_interval=300)
    bind(cfg, "c1", 101, [0])
    agent = Agent(cfg, "c1", sampler=Sampler(clock=clock), clock=clock)
    energy_read = []
    for t, counter in ((0, 1_000), (5_000, 2_000), (10_000, 3_000), (30_000, 7_000)):
        script.write(
            gpu_line(0, 0, util=50, energy=counter, power=200_000) + gpu_line(1, 1, energy=300)
        )
        clock.at(t)
        sample = agent.pass_once()
        energy_read.append(sample.readings[0].energy_mj)  # type: ignore[index]
    assert energy_read == [1_000, None, None, 7_000]  # baseline, skipped, skipped, interval
    script.write(gpu_line(0, 0, util=50, energy=9_500, power=200_000) + gpu_line(1, 1, energy=350))
    clock.at(32_000)
    summary = agent.summary(101)  # what the Epilog asks at the job's end: read afresh
    g = summary["gpus"][0]  # type: ignore[index]
    assert g["energy_mj"] == 8_500 and g["energy_counter_ms"] == clock.start + 32_000
    # a new job gets its baseline at once, between interval reads
    bind(cfg, "c1", 102, [1])
    script.write(gpu_line(0, 0, util=50, energy=9_600) + gpu_line(1, 1, util=10, energy=400))
    clock.at(35_000)
    sample = agent.pass_once()
    assert sample.readings[1].energy_mj == 400  # type: ignore[index]
    agent.sampler.close()


def test_energy_readings_out_of_order_are_not_counted_twice() -> None:
    totals = GpuTotals(minor=0, slurm_index=0)
    totals.add_energy_counter(1_000, 100)
    totals.add_energy_counter(3_000, 300)  # a fresh reading for the Epilog
    totals.add_energy_counter(2_000, 200)  # the pass that raced it, folded later
    totals.add_energy_counter(4_000, 400)
    assert totals.energy_mj == 300 and totals.energy_measured_ms == 3_000


def test_hook_failure_metric_counts_the_run_dir_when_the_spool_could_not(tmp_path: Path) -> None:
    from slurm_hooks.agent.metrics import _hook_failures

    spool, run = tmp_path / "spool", tmp_path / "run"
    spool.mkdir()
    run.mkdir()
    assert _hook_failures(str(spool), str(run)) == 0
    (spool / "hook-failures").write_text("2\n")
    (run / "hook-failures").write_text("5\n")  # three more while the spool's disk was full
    assert _hook_failures(str(spool), str(run)) == 5
    (run / "hook-failures").write_text("garbage")
    assert _hook_failures(str(spool), str(run)) == 2
