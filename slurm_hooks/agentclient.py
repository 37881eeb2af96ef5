"""The Epilog's side of the agent: ask for a job's node summary, else read its file.

The agent (slurm_hooks/agent) answers ``{"op": "summary", "job_id": N}\\n`` on its Unix
socket with one JSON line, and persists the same summary to
``<run_dir>/<node>/agent/<job_id>.json`` (slurm_hooks.agent.state.summary_path). Uses
_socket rather than socket (which imports enum) and parses the answer with the json
module's C scanner (canonical.loads): ``import json`` would cost the Epilog 8 ms of CPU.
"""

import time

from computeproof.posixfs import exists, join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from slurm_hooks.hookconfig import HookConfig


def summary_file(config: "HookConfig", node: str, job_id: int) -> str:
    """The agent's persisted summary for ``job_id`` on ``node`` (as agent.state says)."""
    return join(config.run_dir, node, "agent", f"{job_id}.json")


def _parse(data: bytes) -> dict[str, object] | None:
    from computeproof.canonical import loads

    try:
        value = loads(data)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    # An agent may wrap its answer ({"ok": true, "summary": {...}}) or send it bare.
    inner = value.get("summary", value)
    if not isinstance(inner, dict) or value.get("ok") is False or "error" in value:
        return None
    return inner


def ask_agent(path: str, job_id: int, timeout: float) -> dict[str, object] | None:
    """The summary the agent's socket returns, or None (no agent, error, timeout)."""
    import _socket

    deadline = time.monotonic() + timeout
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b'{"job_id":%d,"op":"summary"}\n' % job_id)
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\n" in data:
                break
        line = b"".join(chunks).split(b"\n", 1)[0]
        return _parse(line) if line else None
    except OSError:
        return None
    finally:
        sock.close()


def read_summary_file(path: str) -> dict[str, object] | None:
    """The agent's persisted summary, or None if absent or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return _parse(data)


def node_summary(
    config: "HookConfig", node: str, job_id: int, timeout: float = 0.8
) -> tuple[dict[str, object] | None, str]:
    """(summary, source): from the socket ("agent"), the file ("agent_file"), or none."""
    sock_path = config.agent_socket_path(node)
    if exists(sock_path):
        summary = ask_agent(sock_path, job_id, timeout)
        if summary is not None:
            return summary, "agent"
    summary = read_summary_file(summary_file(config, node, job_id))
    if summary is not None:
        return summary, "agent_file"
    return None, "none"
