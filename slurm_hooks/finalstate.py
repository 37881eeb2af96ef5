"""Job states: which mean a run is over, which are final, and one name from a flag list.

Slurm 22.05 names a job's state with one word; the JSON of 24.11 and later gives a list
of flags (``["PENDING", "REQUEUED"]``, ``["COMPLETED", "COMPLETING"]``). :func:`state_name`
turns the list into the word Slurm's own ``job_state_string`` prints, flags first, so
every version reads the same. Standard library only: the hooks import this.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# States that are not final yet: the collector keeps asking while it sees one. REQUEUED
# is final for a run: the requeued job's next run gets its own events (run + 1).
NOT_FINAL = frozenset(
    {
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "CONFIGURING",
        "SUSPENDED",
        "RESIZING",
        "STAGE_OUT",
        "SIGNALING",
        "STOPPED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "SPECIAL_EXIT",
        "RESV_DEL_HOLD",
        "UNKNOWN",
        "",
    }
)
# States in which a run has not ended: its record cannot fill ``completed`` yet
# (COMPLETING has: the run is over, its epilogs run).
NOT_ENDED = frozenset({"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", ""})

# job_state_string's order (src/common/slurm_protocol_defs.c): a flag names the state
# before the base state does.
_FLAG_ORDER = (
    "COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING",
)  # fmt: skip
_BASE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


def state_name(flags: "list[str]") -> str:
    """The one state word of a flag list, as ``job_state_string`` would print it."""
    present = set(flags)
    for flag in _FLAG_ORDER:
        if flag in present:
            return flag
    for flag in flags:
        if flag in _BASE:
            return flag
    return flags[0] if flags else ""


def ended(record: "Mapping[str, object]") -> bool:
    """Whether a record shows its run over (COMPLETING counts; a running job's end time
    is only the time limit's)."""
    return record.get("state") not in NOT_ENDED and record.get("end_epoch") is not None


def settled(record: "Mapping[str, object]") -> bool:
    """Whether an accounting record is final and whole.

    slurmctld sends slurmdbd a job's start, node and end records separately, so sacct can
    show the final state while its node list is still the batch host alone; a batch job's
    exit code and signal arrive with its batch step's end.
    """
    if record.get("state") in NOT_FINAL or record.get("end_epoch") is None:
        return False
    if record.get("start_epoch") is None:
        return True  # never ran: no nodes to wait for
    nodes, count = record.get("nodes") or [], record.get("num_nodes")
    if not (isinstance(nodes, list) and nodes and (count is None or len(nodes) == count)):
        return False
    return record.get("batch") is not True or record.get("batch_step_end") is not None
