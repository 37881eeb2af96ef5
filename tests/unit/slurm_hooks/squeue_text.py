"""``squeue -O`` lines in slurmcli.SQUEUE_FORMAT's field order, for tests that serve a fake
squeue: N/A (Slurm's "unset") for every field a test leaves out."""

from slurm_hooks.slurmcli import SQUEUE_FIELDS


def squeue_line(**values: object) -> str:
    """One job's line; keyword names are the field names with - as _ (tres_alloc)."""
    return "|".join(str(values.get(name.replace("-", "_"), "N/A")) for name in SQUEUE_FIELDS)
