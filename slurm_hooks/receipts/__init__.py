"""The shared receipt library: events, canonical bytes, signing, Merkle log, receipts.

Knows nothing of Slurm, NVML or HTTP servers. The light core (canonical, event, spool)
is standard-library only and cheap to import: the Slurm hooks run it.
"""
