"""`computeproof-job`: the in-job commands, with nothing but the standard library.

Jobs run as their users, with whatever Python the user has on PATH; this tool needs only
/usr/bin/python3 and read access to the package, so it works where the full `computeproof`
CLI (click, rich, cryptography) is not installed for users:

    computeproof-job [--wait SECONDS] progress [--percent N] [--epoch N[/TOTAL]] [--message TEXT]
    computeproof-job [--wait SECONDS] artifact PATH...

The agent decides which job the caller belongs to (peer credentials and process
ancestry); nothing here, nor any environment variable, can claim another job. While the
agent restarts (no socket, or nobody listening) the tool tries again for ``--wait``
seconds (default 30) before it gives up. Paths are printed with control characters
escaped: a file name cannot rewrite the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys

from computeproof.config import load_config
from computeproof.errors import ComputeProofError
from slurm_hooks.agent.client import RETRY_SECONDS, record_artifacts, record_progress
from slurm_hooks.agent.ratelog import printable


def _epoch(text: str) -> tuple[int, int | None]:
    done, _, total = text.partition("/")
    try:
        return int(done), (int(total) if total else None)
    except ValueError as e:
        raise argparse.ArgumentTypeError("use N or N/TOTAL, e.g. 15/30") from e


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("must be a number of seconds") from e
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be from 0 to 3600")
    return value


def _percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be 0..100")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, ask the agent, print one line; return the exit code."""
    parser = argparse.ArgumentParser(prog="computeproof-job", description=__doc__.split("\n")[0])
    parser.add_argument("--node", default=None, help="node name (default: SLURMD_NODENAME)")
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=RETRY_SECONDS,
        help=f"seconds to keep trying while the agent restarts (default {RETRY_SECONDS:g})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("progress", help="record the job's progress")
    p.add_argument("--percent", type=_percent, default=None)
    p.add_argument("--epoch", type=_epoch, default=None, help="N or N/TOTAL")
    p.add_argument("--message", default=None)
    a = sub.add_parser("artifact", help="record SHA-256 and size of output files")
    a.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    try:
        config = load_config()
        node = args.node or os.environ.get("SLURMD_NODENAME") or config.host
        path = config.agent_socket_path(node)
        if args.command == "progress":
            done, total = args.epoch if args.epoch else (None, None)
            event = record_progress(path, args.percent, done, total, args.message, args.wait)
            print(f"recorded progress (seq {event['seq']})")
        else:
            event = record_artifacts(path, args.paths, args.wait)
            payload = event["payload"]
            assert isinstance(payload, dict)
            # the paths as given here, in order: the event may hold one as {"non_utf8": ...}
            for art, given in zip(payload["artifacts"], args.paths, strict=True):
                print(f"{art['sha256']}  {art['size']}  {printable(os.path.abspath(given), 4096)}")
    except ComputeProofError as e:
        print(f"computeproof-job: error: {printable(str(e), 1000)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
