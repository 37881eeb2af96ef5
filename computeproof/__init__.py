"""ComputeProof: verifiable GPU job receipts. The shared receipt library.

Events, canonical bytes, signing, the Merkle log, checkpoints, receipts, the spool format,
the ledger and its stores, reports and the CLI. It knows nothing of Slurm or NVML (that
is ``slurm_hooks``, which imports this package, never the reverse). The light core
(errors, posixfs, canonical, event, spool) is standard-library only and cheap to import:
the Slurm hooks run it.
"""

__version__ = "0.1.0"
