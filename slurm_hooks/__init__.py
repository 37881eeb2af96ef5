"""ComputeProof: verifiable GPU job receipts for Slurm clusters."""

__version__ = "0.1.0"
