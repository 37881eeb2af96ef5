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

Every caller is hostile, so everything a caller can make the agent hold is bounded:

- connections: at most MAX_CONNECTIONS_PER_UID open per uid and MAX_CONNECTIONS in all
  (root, which the Epilog runs as, has a share of its own); one over the cap gets a
  one-line ``"retry": true`` refusal at once and no thread;
- a request: one line of at most MAX_REQUEST bytes, JSON nested at most MAX_DEPTH deep,
  complete within READ_DEADLINE_S, with at most MAX_FDS descriptors; anything else gets
  a one-line error, never a traceback;
- descriptors received with SCM_RIGHTS are closed on every path, the failing ones first;
- artifact hashing: bytes per request (``artifact_max_bytes``) and per job
  (``artifact_job_bytes``), HASHERS files at a time, stopped when the client goes or the
  job ends; a file that changes while it is hashed is refused;
- log lines a caller provokes are escaped and rate-limited per cause (ratelog.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable

from computeproof.canonical import canonical_bytes
from computeproof.errors import AgentError, ComputeProofError
from slurm_hooks.agent.accumulate import JobAccumulator
from slurm_hooks.agent.daemon import Agent, Artifact, CallerRefused
from slurm_hooks.agent.ratelog import RateLimitedLog, printable

log = logging.getLogger("computeproof.agent")
limited = RateLimitedLog(log)

MAX_REQUEST = 64 * 1024
MAX_FDS = 64
MAX_DEPTH = 32
MAX_PATH = 4096
READ_DEADLINE_S = 10.0
MAX_CONNECTIONS = 128
MAX_CONNECTIONS_PER_UID = 16
MAX_ROOT_CONNECTIONS = 32
HASHERS = 2
CHUNK = 1 << 20

_hashers = threading.BoundedSemaphore(HASHERS)


class RequestError(AgentError):
    """A socket request is malformed."""


class Cancelled(AgentError):
    """Hashing stopped: the client went away or the job ended."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The connected peer's (pid, uid, gid), from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def read_request(sock: socket.socket, fds: list[int], deadline_s: float | None = None) -> bytes:
    """Read one request line within ``deadline_s`` (default READ_DEADLINE_S); descriptors
    that came with it are appended to ``fds`` as they arrive, so the caller closes them
    whatever is raised here."""
    if deadline_s is None:
        deadline_s = READ_DEADLINE_S
    data = bytearray()
    end = time.monotonic() + deadline_s
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise RequestError(f"no complete request line within {deadline_s:g} s")
        sock.settimeout(remaining)
        try:
            chunk, new_fds, flags, _addr = socket.recv_fds(
                sock, 65536, max(0, MAX_FDS - len(fds)), socket.MSG_CMSG_CLOEXEC
            )
        except TimeoutError as e:
            raise RequestError(f"no complete request line within {deadline_s:g} s") from e
        fds.extend(new_fds)
        if flags & socket.MSG_CTRUNC:  # the kernel closed the descriptors that did not fit
            raise RequestError(f"more than {MAX_FDS} descriptors sent")
        if not chunk:
            return bytes(data)  # end of stream: the line needs no newline
        newline = chunk.find(b"\n")
        data += chunk if newline < 0 else chunk[:newline]
        if len(data) > MAX_REQUEST:
            raise RequestError(f"request longer than {MAX_REQUEST} bytes")
        if newline >= 0:
            return bytes(data)


def nesting_depth(line: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in a JSON text (strings skipped), counted up to
    ``limit`` + 1; cheap for ordinary requests, linear for hostile ones."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def decode_request(line: bytes) -> object:
    """The request's JSON value, or a RequestError that says what is wrong with it."""
    import json

    if not line.strip():
        raise RequestError("empty request; send one JSON object on one line")
    if nesting_depth(line) > MAX_DEPTH:
        raise RequestError(f"request nests arrays or objects deeper than {MAX_DEPTH}")
    try:
        return json.loads(line)
    except RecursionError as e:  # not reached after the depth check; belt and braces
        raise RequestError(f"request nests arrays or objects deeper than {MAX_DEPTH}") from e
    except ValueError as e:
        raise RequestError(f"request is not JSON: {printable(str(e), 120)}") from e


def path_verified(pid: int, path: str, st: os.stat_result) -> bool:
    """Whether ``path``, resolved in process ``pid``'s own root and mounts (a job may have
    a private /tmp), is the file ``st`` describes (same device and inode)."""
    if not path.startswith("/"):
        return False
    try:
        other = os.stat(f"/proc/{pid}/root{path}")
    except (OSError, ValueError, UnicodeError):
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def digest_fd(
    fd: int,
    st: os.stat_result,
    path: str,
    cancelled: Callable[[], str | None] = lambda: None,
) -> str:
    """SHA-256 of the first ``st.st_size`` bytes of the file open on ``fd``; refused when
    the file changes meanwhile, stopped when ``cancelled()`` gives a reason."""
    h = hashlib.sha256()
    size = st.st_size
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
        reason = cancelled()
        if reason is not None:
            raise Cancelled(f"hashing {printable(path)} stopped: {reason}")
    after = os.fstat(fd)
    if offset != size or (after.st_size, after.st_mtime_ns) != (size, st.st_mtime_ns):
        raise RequestError(
            f"{printable(path)} changed while it was hashed; record it once it is complete"
        )
    return h.hexdigest()


def client_gone(sock: socket.socket) -> bool:
    """Whether the peer has closed its end (it gave up waiting for the reply)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


def hash_artifacts(
    agent: Agent,
    acc: JobAccumulator,
    pid: int,
    fds: list[int],
    paths: list[str],
    cancelled: Callable[[], str | None],
) -> list[Artifact]:
    """Hash each descriptor's file within the request's and the job's byte budgets."""
    stats = []
    for fd, path in zip(fds, paths, strict=True):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RequestError(f"{printable(path)} is not a regular file")
        stats.append(st)
    total = sum(st.st_size for st in stats)
    limit = agent.config.artifact_max_bytes
    if total > limit:
        raise RequestError(
            f"the files hold {total} bytes, over the {limit} one request may have hashed "
            "(artifact_max_bytes in the agent's config)"
        )
    agent.reserve_artifact_bytes(acc, total)
    artifacts = []
    started = False
    try:
        while not _hashers.acquire(timeout=0.5):
            reason = cancelled()
            if reason is not None:
                raise Cancelled(f"hashing stopped before it began: {reason}")
        started = True
        try:
            for fd, path, st in zip(fds, paths, stats, strict=True):
                digest = digest_fd(fd, st, path, cancelled)
                artifacts.append(Artifact(path, digest, st.st_size, path_verified(pid, path, st)))
        finally:
            _hashers.release()
    finally:
        if not started:
            agent.release_artifact_bytes(acc, total)
    return artifacts


def _int_field(request: dict[str, object], name: str, low: int, high: int) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"'{name}' must be an integer from {low} to {high}")
    return value


def handle_request(
    agent: Agent,
    request: object,
    pid: int,
    uid: int,
    fds: list[int],
    cancelled: Callable[[JobAccumulator], str | None] = lambda acc: None,
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
        if (
            not isinstance(paths, list)
            or not all(isinstance(p, str) and 0 < len(p) <= MAX_PATH for p in paths)
            or len(paths) > MAX_FDS
        ):
            raise RequestError(
                f"artifact needs 'paths', a list of at most {MAX_FDS} paths "
                f"of at most {MAX_PATH} characters"
            )
        if not paths or len(paths) != len(fds):
            raise RequestError(f"artifact got {len(paths)} paths but {len(fds)} open files")
        acc = agent.caller_job(pid, uid)  # refuse before reading possibly large files
        artifacts = hash_artifacts(agent, acc, pid, fds, paths, lambda: cancelled(acc))
        return {"ok": True, "event": agent.record_artifacts(pid, uid, artifacts, acc)}
    if op == "gpus":
        return {"ok": True, "gpus": agent.gpu_table()}
    shown = printable(op, 40) if isinstance(op, str) else type(op).__name__
    raise RequestError(f"unknown op {shown!r}; expected summary, progress, artifact or gpus")


def _reply_bytes(reply: dict[str, object]) -> bytes:
    """The reply line; an error message that canonical JSON refuses is escaped instead."""
    try:
        return canonical_bytes(reply) + b"\n"
    except ComputeProofError:
        return canonical_bytes({"ok": False, "error": printable(str(reply.get("error")))}) + b"\n"


class AgentServer(socketserver.UnixStreamServer):
    """The socket server: a thread per admitted connection, connections capped per uid."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: a burst of callers waits, not EAGAIN

    def __init__(self, path: str, agent: Agent) -> None:
        self.agent = agent
        self.path = path
        self.stats = agent.socket_stats
        self._slots = threading.Lock()
        self._open: dict[int, int] = {}  # uid -> connections open
        self._open_users = 0  # connections open by uids other than root
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)  # a stale socket from an agent that died
            super().__init__(path, socketserver.BaseRequestHandler)
            os.chmod(path, 0o666)
        except OSError as e:
            raise AgentError(f"cannot listen on {path}: {e.strerror or e}") from e

    # -- admission ------------------------------------------------------------------------

    def _admit(self, uid: int) -> str | None:
        """Take a connection slot for ``uid``, or say why there is none."""
        with self._slots:
            have = self._open.get(uid, 0)
            if uid == 0:
                if have >= MAX_ROOT_CONNECTIONS:
                    return f"{have} root connections already open"
            elif have >= MAX_CONNECTIONS_PER_UID:
                return f"uid {uid} already has {have} connections open"
            elif self._open_users >= MAX_CONNECTIONS:
                return f"{self._open_users} connections already open"
            self._open[uid] = have + 1
            if uid != 0:
                self._open_users += 1
            self.stats.open_connections += 1
        return None

    def _release(self, uid: int) -> None:
        with self._slots:
            left = self._open.get(uid, 1) - 1
            if left:
                self._open[uid] = left
            else:
                self._open.pop(uid, None)
            if uid != 0:
                self._open_users -= 1
            self.stats.open_connections -= 1

    def process_request(self, request: object, client_address: object) -> None:
        """Admit the connection (then a thread answers it) or refuse it at once."""
        sock: socket.socket = request  # type: ignore[assignment]
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError:
            self.shutdown_request(sock)
            return
        why = self._admit(uid)
        if why is not None:
            self.stats.count(self.stats.refused, "connection cap")
            limited.warning(
                "connection refused", "refused a connection from uid %d pid %d: %s", uid, pid, why
            )
            with contextlib.suppress(OSError):  # never wait for a client here
                sock.setblocking(False)
                sock.send(_reply_bytes({
                    "ok": False, "retry": True, "error": f"agent busy: {why}; try again shortly",
                }))  # fmt: skip
            self.shutdown_request(sock)
            return
        thread = threading.Thread(
            target=self._serve, args=(sock, pid, uid), name="computeproof-request", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refuse rather than fall over
            self._release(uid)
            self.shutdown_request(sock)

    # -- one connection -------------------------------------------------------------------

    def _serve(self, sock: socket.socket, pid: int, uid: int) -> None:
        try:
            reply = self._answer(sock, pid, uid)
            with contextlib.suppress(OSError):  # the caller gave up (the Epilog waits 0.7 s)
                sock.settimeout(5)
                sock.sendall(_reply_bytes(reply))
        finally:
            self._release(uid)
            self.shutdown_request(sock)

    def _answer(self, sock: socket.socket, pid: int, uid: int) -> dict[str, object]:
        fds: list[int] = []
        op = "?"
        try:
            line = read_request(sock, fds)
            request = decode_request(line)
            if isinstance(request, dict) and isinstance(request.get("op"), str):
                op = str(request["op"])[:16]
            if op != "artifact" and fds:
                raise RequestError(f"{printable(op)} takes no open files; {len(fds)} were sent")

            def cancelled(acc: JobAccumulator) -> str | None:
                if client_gone(sock):
                    return "the client went away"
                if not self.agent.is_running(acc):
                    return f"job {acc.binding.job} ended"
                return None

            reply = handle_request(self.agent, request, pid, uid, fds, cancelled)
            result = "ok"
        except (RequestError, CallerRefused, Cancelled) as e:
            result = type(e).__name__
            limited.warning(
                f"request refused: {result}", "uid %d pid %d: %s request refused: %s",
                uid, pid, printable(op, 16), printable(str(e)),
            )  # fmt: skip
            reply = {"ok": False, "error": printable(str(e), 500)}
        except ComputeProofError as e:
            result = "error"
            reply = {"ok": False, "error": printable(str(e), 500)}
        except OSError as e:
            result = "error"
            reply = {"ok": False, "error": f"agent: {printable(str(e))}"}
        except Exception as e:  # a bug answered in one line, logged in one line
            result = "internal error"
            limited.error(
                "internal error", "uid %d pid %d: %s request failed: %s: %s",
                uid, pid, printable(op, 16), type(e).__name__, printable(str(e)),
            )  # fmt: skip
            reply = {"ok": False, "error": f"agent internal error: {type(e).__name__}"}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        op_label = op if op in ("summary", "progress", "artifact", "gpus") else "other"
        with self._slots:
            self.stats.count(self.stats.requests, (op_label, result))
        return reply

    def handle_error(self, request: object, client_address: object) -> None:
        """One rate-limited line instead of socketserver's traceback on stderr."""
        limited.error("socket error", "socket server error: %s", printable(repr(request)))

    # -- life -----------------------------------------------------------------------------

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
