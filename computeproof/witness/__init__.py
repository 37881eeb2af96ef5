"""Witnesses (https://c2sp.org/tlog-witness): independent services that cosign a log's
checkpoints only when each extends the last one they saw, so that a log cannot roll back,
fork or show two views without every witness refusing.

    logkey.py   the witness's signed statement of the log keys it checks (for verifiers)
    state.py    the witness's durable record of the latest checkpoint per log
    service.py  add-checkpoint: the protocol's checks and the cosignature, without HTTP
    server.py   `computeproof witness serve`: the HTTP service (standard library)
    client.py   the ledger's side: submit a checkpoint, keep cosignatures, raise alarms
"""
