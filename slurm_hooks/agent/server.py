"""The agent's Unix socket: one JSON line in, one JSON line out, caller known by SO_PEERCRED.

Requests (reply ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``)::

    {"op": "summary", "job_id": 101}                 -> {"ok": true, "summary": {...}}
    {"op": "progress", "percent": 50, "epoch": 15, "epochs": 30, "message": "..."}
                                                     -> {"ok": true, "event": {...}}
    {"op": "artifact", "paths": ["/abs/out.bin"]}    + one open descriptor per path sent
                                                       with SCM_RIGHTS -> {"ok": true, ...}
    {"op": "gpus"}                                   -> {"ok": true, "gpus": [...]}

The caller's pid and uid come from the kernel (SO_PEERCRED), and its job from its process
ancestry or cgroup, never from anything the caller sends. Artifacts are hashed by the agent
from the descriptors the caller opened, so a caller can only record files it can read and
cannot misstate their digests. The socket is mode 0666: job owners must reach it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import socketserver
import stat
import struct
import threading

from computeproof.canonical import canonical_bytes
from computeproof.errors import AgentError, ComputeProofError
from slurm_hooks.agent.daemon import Agent, Artifact

MAX_REQUEST = 64 * 1024
MAX_FDS = 64
CHUNK = 1 << 20


class RequestError(AgentError):
    """A socket request is malformed."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The connected peer's (pid, uid, gid), from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def read_request(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Read one request line and any descriptors sent with it."""
    data = b""
    fds: list[int] = []
    while b"\n" not in data:
        chunk, new_fds, _flags, _addr = socket.recv_fds(sock, 65536, MAX_FDS)
        fds.extend(new_fds)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0], fds


def digest_fd(fd: int, path: str) -> Artifact:
    """SHA-256 and size of the regular file open on ``fd``, read from its start."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise RequestError(f"{path} is not a regular file")
    h = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return Artifact(path=path, sha256=h.hexdigest(), size=offset)


def _int_field(request: dict[str, object], name: str, low: int, high: int) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"'{name}' must be an integer from {low} to {high}")
    return value


def handle_request(
    agent: Agent, request: object, pid: int, uid: int, fds: list[int]
) -> dict[str, object]:
    """Answer one decoded request from the process ``pid`` running as ``uid``."""
    if not isinstance(request, dict):
        raise RequestError("a request must be a JSON object")
    op = request.get("op")
    if op == "summary":
        job_id = _int_field(request, "job_id", 0, 2**53 - 1)
        if job_id is None:
            raise RequestError("summary needs 'job_id'")
        return {"ok": True, "summary": agent.summary(job_id, uid)}
    if op == "progress":
        message = request.get("message")
        if message is not None and (not isinstance(message, str) or len(message) > 4096):
            raise RequestError("'message' must be a string of at most 4096 characters")
        event = agent.record_progress(
            pid,
            uid,
            _int_field(request, "percent", 0, 100),
            _int_field(request, "epoch", 0, 2**31),
            _int_field(request, "epochs", 0, 2**31),
            message,
        )
        return {"ok": True, "event": event}
    if op == "artifact":
        paths = request.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise RequestError("artifact needs 'paths', a list of strings")
        if not paths or len(paths) != len(fds):
            raise RequestError(f"artifact got {len(paths)} paths but {len(fds)} open files")
        agent.caller_job(pid, uid)  # refuse before reading possibly large files
        artifacts = [digest_fd(fd, path) for fd, path in zip(fds, paths, strict=True)]
        return {"ok": True, "event": agent.record_artifacts(pid, uid, artifacts)}
    if op == "gpus":
        return {"ok": True, "gpus": agent.gpu_table()}
    raise RequestError(f"unknown op {op!r}; expected summary, progress, artifact or gpus")


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        import json

        sock: socket.socket = self.request
        sock.settimeout(30)
        fds: list[int] = []
        try:
            pid, uid, _gid = peer_credentials(sock)
            line, fds = read_request(sock)
            try:
                request = json.loads(line)
            except ValueError as e:
                raise RequestError(f"request is not JSON: {e}") from e
            reply = handle_request(self.server.agent, request, pid, uid, fds)
        except ComputeProofError as e:
            reply = {"ok": False, "error": str(e)}
        except OSError as e:
            reply = {"ok": False, "error": f"agent: {e}"}
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):  # the caller gave up (the Epilog waits at most 1 s)
            sock.sendall(canonical_bytes(reply) + b"\n")


class AgentServer(socketserver.ThreadingUnixStreamServer):
    """The socket server; each connection is handled in its own thread."""

    daemon_threads = True

    def __init__(self, path: str, agent: Agent) -> None:
        self.agent = agent
        self.path = path
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)  # a stale socket from an agent that died
            super().__init__(path, _Handler)
            os.chmod(path, 0o666)
        except OSError as e:
            raise AgentError(f"cannot listen on {path}: {e.strerror or e}") from e

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; return it."""
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="computeproof-socket",
            daemon=True,
        )
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        self.shutdown()
        self.server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
