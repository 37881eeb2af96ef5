"""The Slurm side of ComputeProof: the Prolog/Epilog hooks, job information from Slurm
(commands' JSON, pyslurm), the controller's collector, the per-node GPU agent (NVML) and
the job tool. It records events through the ``computeproof`` receipt library."""
