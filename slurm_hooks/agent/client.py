"""Talking to the node agent's socket. Standard library only (the Epilog may import it).

``node_summary`` is what the Epilog needs: ask the agent (one line, at most ``timeout``
seconds), else read the summary the agent persisted.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence

from computeproof.config import Config
from computeproof.errors import AgentError


class AgentUnavailable(AgentError):
    """The agent did not take the request: no socket, nobody listening, busy, or the
    connection ended before a reply (it restarted). Worth retrying."""


def request(
    path: str,
    message: dict[str, object],
    fds: Sequence[int] = (),
    timeout: float = 5.0,
    retry_s: float = 0.0,
) -> dict[str, object]:
    """Send one request line (and descriptors) to the agent; return its decoded reply.

    With ``retry_s`` > 0, an agent that is restarting or busy is tried again (0.2 s, then
    up to 2 s apart) until ``retry_s`` seconds have passed. A request cut off after it was
    sent may then be recorded twice (two progress events); one made during a restart is
    not lost."""
    give_up = time.monotonic() + retry_s
    pause = 0.2
    while True:
        try:
            return _request_once(path, message, fds, timeout)
        except AgentUnavailable as e:
            left = give_up - time.monotonic()
            if left <= 0:
                if retry_s > 0:
                    raise AgentUnavailable(f"{e} (tried for {retry_s:g} s)") from e
                raise
            time.sleep(min(pause, left))
            pause = min(2.0, pause * 2)


def _request_once(
    path: str, message: dict[str, object], fds: Sequence[int], timeout: float
) -> dict[str, object]:
    line = json.dumps(message, sort_keys=True).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            if fds:
                sent = socket.send_fds(sock, [line], list(fds))
                if sent < len(line):
                    sock.sendall(line[sent:])
            else:
                sock.sendall(line)
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError as e:
        raise AgentUnavailable(f"no agent socket at {path}: is computeproof-agent running?") from e
    except ConnectionRefusedError as e:
        raise AgentUnavailable(f"the agent at {path} refused the connection: is it running?") from e
    except TimeoutError as e:
        raise AgentError(f"the agent at {path} did not answer within {timeout:g} s") from e
    except BlockingIOError as e:  # the listen backlog is full: the agent is swamped
        raise AgentUnavailable(f"the agent at {path} is busy (connection queue full)") from e
    except (ConnectionResetError, BrokenPipeError) as e:
        raise AgentUnavailable(f"the agent at {path} closed the connection (restarting?)") from e
    except OSError as e:
        raise AgentError(f"cannot talk to the agent at {path}: {e.strerror or e}") from e
    if not data:
        raise AgentUnavailable(f"the agent at {path} closed the connection (restarting?)")
    try:
        reply = json.loads(data)
    except ValueError as e:
        raise AgentError(f"the agent at {path} sent a malformed reply") from e
    if not isinstance(reply, dict):
        raise AgentError(f"the agent at {path} sent a malformed reply")
    if not reply.get("ok"):
        error = str(reply.get("error") or "the agent refused the request")
        if reply.get("retry") is True:
            raise AgentUnavailable(error)
        raise AgentError(error)
    return reply


def node_summary(
    config: Config, node: str, job_id: int, timeout: float = 1.0
) -> dict[str, object] | None:
    """The job's summary from the agent, else from its persisted state, else None."""
    from slurm_hooks.agent.state import read_summary, summary_path

    try:
        reply = request(
            config.agent_socket_path(node), {"op": "summary", "job_id": job_id}, timeout=timeout
        )
        summary = reply.get("summary")
        if isinstance(summary, dict):
            return summary
    except AgentError:
        pass
    return read_summary(summary_path(config, node, job_id))


def open_artifacts(paths: Sequence[str]) -> tuple[list[str], list[int]]:
    """Open each file for reading as the caller; return absolute paths and descriptors."""
    fds: list[int] = []
    absolute: list[str] = []
    try:
        for p in paths:
            absolute.append(os.path.abspath(p))
            fds.append(os.open(p, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise AgentError(f"cannot open {e.filename}: {e.strerror}") from e
    return absolute, fds


RETRY_SECONDS = 30.0  # the job tool waits this long for an agent that is restarting


def record_progress(
    socket_path: str,
    percent: int | None = None,
    epoch: int | None = None,
    epochs: int | None = None,
    message: str | None = None,
    retry_s: float = RETRY_SECONDS,
) -> dict[str, object]:
    """Ask the agent to record the calling job's progress; return the recorded event."""
    reply = request(
        socket_path,
        {"op": "progress", "percent": percent, "epoch": epoch, "epochs": epochs,
         "message": message},
        retry_s=retry_s,
    )  # fmt: skip
    event = reply.get("event")
    assert isinstance(event, dict)
    return event


def record_artifacts(
    socket_path: str, paths: Sequence[str], retry_s: float = RETRY_SECONDS
) -> dict[str, object]:
    """Ask the agent to hash the calling job's output files; return the recorded event.

    The files are opened here, as the caller, and passed as descriptors: the agent hashes
    only what the job itself can read."""
    absolute, fds = open_artifacts(paths)
    try:
        reply = request(
            socket_path,
            {"op": "artifact", "paths": absolute},
            fds=fds,
            timeout=600,
            retry_s=retry_s,
        )
    finally:
        for fd in fds:
            os.close(fd)
    event = reply.get("event")
    assert isinstance(event, dict)
    return event
