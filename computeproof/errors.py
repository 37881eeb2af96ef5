"""The project's exception tree. Stdlib only: the hook path imports it.

ComputeProofError
├── ConfigError              bad or unreadable configuration
├── ReceiptError             the receipts library
│   ├── CanonicalError       value not representable in canonical JSON
│   ├── SignatureError       bad, missing or foreign signature
│   │   └── UnknownKeyError  signed by a key not enrolled (or not for that host)
│   ├── KeyError_            key file missing, unreadable or malformed
│   ├── ProofError           inclusion / consistency proof does not verify
│   ├── CheckpointError      malformed or wrongly signed checkpoint
│   │   └── RollbackError    the log does not extend the last checkpoint the ledger signed
│   ├── BundleError          receipt bundle malformed or failing verification
│   ├── StoreError           storage backend failure or corruption
│   │   └── StoreConflict    another writer appended first (nothing changed; redo)
│   ├── WitnessError         a witness refused a checkpoint, or cannot be reached
│   └── CollectorError       the collector cannot be reached, or refused a request
├── SpoolError               the local durable spool
├── SlurmError               Slurm commands / job info
├── AgentError               GPU agent, NVML
├── ReportError              usage reports, rate cards, grant maps
└── AnchorError              chain anchoring
"""


class ComputeProofError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(ComputeProofError):
    """Configuration file or value is wrong; the message says which and how to fix it."""


class ReceiptError(ComputeProofError):
    """Errors of the receipts library."""


class CanonicalError(ReceiptError):
    """A value cannot be written as canonical JSON (floats, non-string keys...)."""


class SignatureError(ReceiptError):
    """A signature is bad, missing, or made by a key that is not enrolled."""


class UnknownKeyError(SignatureError):
    """Signed by a key the ledger does not trust (yet): a site configuration problem."""


class KeyError_(ReceiptError):
    """A key file is missing, unreadable or malformed."""


class ProofError(ReceiptError):
    """An inclusion or consistency proof does not verify."""


class CheckpointError(ReceiptError):
    """A checkpoint is malformed, wrongly signed or from another log."""


class RollbackError(CheckpointError):
    """The log was rolled back or replaced: it does not extend the last checkpoint the
    ledger signed (kept beside its key), so the ledger refuses to sign or append."""


class WitnessError(ReceiptError):
    """A witness refused a checkpoint (rollback, fork, bad proof, unknown log) or could
    not be reached; or a witness request is malformed."""


class BundleError(ReceiptError):
    """A receipt bundle is malformed or fails verification."""


class StoreError(ReceiptError):
    """The storage backend failed or holds corrupted data."""


class StoreConflict(StoreError):
    """Another writer appended to the log after this append read its size: the append
    changed nothing and can be redone from a fresh read."""


class CollectorError(ReceiptError):
    """The collector (`computeproof serve`) cannot be reached or refused a forwarder's
    request; what was being sent stays in the spool."""


class SpoolError(ComputeProofError):
    """The local spool cannot be written or read."""


class SlurmError(ComputeProofError):
    """A Slurm command failed or returned something unexpected."""


class AgentError(ComputeProofError):
    """The GPU agent or NVML failed."""


class ReportError(ComputeProofError):
    """A report, rate card or grant map is wrong."""


class AnchorError(ComputeProofError):
    """Anchoring a checkpoint on a chain failed."""
