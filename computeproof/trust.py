"""Trust roots: which ledger key a verifier of a receipt or report believes, and why.

A receipt carries its ledger's public key, and its checkpoint and receipt index verify
under that key: that proves only that whoever made the file holds *a* key. What makes the
key the ledger's comes from outside the file (docs/trust.md):

- a pinned key: ``--ledger-key ed25519:...``;
- keys the verifier's configuration trusts: ``trusted_ledger_keys``;
- witnesses: ``--witness <verifier key>`` (repeatable) and ``--quorum N`` (default: all
  of them). Each counts when its cosignature (C2SP tlog-cosignature) on the checkpoint
  verifies; with no trusted ledger key, it must also have signed the statement that the
  file's ledger key is the key it checks this log's checkpoints with (witness/logkey.py).

With no root at all a valid file is UNTRUSTED, never VALID. With roots that the file does
not meet it is INVALID: the roots are the verifier's policy, and all of them must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from computeproof.checkpoint import Cosigner, parse_cosigner_key, verify_cosignatures
from computeproof.errors import CheckpointError, ConfigError, KeyError_
from computeproof.keys import format_public_key, parse_public_key
from computeproof.witness.logkey import LogKeyStatement, statement_from_json, verified


@dataclass(frozen=True)
class LedgerKeyRoot:
    """A ledger public key the verifier trusts, and where that trust was given."""

    public_raw: bytes
    source: str  # "--ledger-key", "trusted_ledger_keys in <config>", ...


@dataclass(frozen=True)
class TrustRoots:
    """What a verifier trusts: ledger keys, and witnesses with a quorum."""

    ledger_keys: tuple[LedgerKeyRoot, ...] = ()
    witnesses: tuple[Cosigner, ...] = ()
    quorum: int = 0  # of ``witnesses``; 0: all of them

    def __bool__(self) -> bool:
        return bool(self.ledger_keys or self.witnesses)

    @property
    def needed(self) -> int:
        """How many witnesses must vouch."""
        return self.quorum or len(self.witnesses)


@dataclass
class TrustDecision:
    """The verdict on a file's ledger key: trusted (and by which roots), or not."""

    trusted: bool
    ledger_key: str  # the file's key, "ed25519:..."
    roots: list[str] = field(default_factory=list)  # the roots that held, in words
    witnesses: list[str] = field(default_factory=list)  # witnesses that vouched
    problem: str | None = None  # roots were given and not met: the file is INVALID

    def to_json(self) -> dict[str, object]:
        """For --json outputs."""
        return {
            "trusted": self.trusted,
            "ledger_key": self.ledger_key,
            "roots": self.roots,
            "witnesses": self.witnesses,
            "problem": self.problem,
        }

    def summary(self) -> str:
        """One phrase: which key was trusted, and why."""
        if self.trusted:
            return f"ledger key {self.ledger_key} trusted: {'; '.join(self.roots)}"
        return f"ledger key {self.ledger_key} is not trusted"


def roots_from_options(
    ledger_key: str | None,
    witness_keys: tuple[str, ...],
    quorum: int | None,
    trusted_ledger_keys: tuple[str, ...] = (),
    config_source: str = "the configuration",
) -> TrustRoots:
    """Trust roots from command-line options; a --ledger-key replaces the configuration's
    trusted_ledger_keys (flags win), witnesses are given on the command line only."""
    keys: list[LedgerKeyRoot] = []
    try:
        if ledger_key:
            keys.append(LedgerKeyRoot(parse_public_key(ledger_key), "pinned with --ledger-key"))
        else:
            for text in trusted_ledger_keys:
                keys.append(
                    LedgerKeyRoot(
                        parse_public_key(text), f"listed in trusted_ledger_keys ({config_source})"
                    )
                )
    except KeyError_ as e:
        where = "--ledger-key" if ledger_key else f"trusted_ledger_keys in {config_source}"
        raise ConfigError(f"{where}: {e}") from e
    witnesses = []
    for text in witness_keys:
        try:
            witnesses.append(parse_cosigner_key(text))
        except CheckpointError as e:
            raise ConfigError(
                f"--witness {text[:60]!r}: {e}; give the witness's verifier key as "
                "`computeproof witness serve` prints it (<name>+<key id>+<base64>)"
            ) from e
    names = [w.name for w in witnesses]
    if len(set(names)) != len(names):
        raise ConfigError("--witness: the same witness name is given twice")
    if quorum is not None and not 1 <= quorum <= len(witnesses):
        raise ConfigError(
            f"--quorum {quorum}: give a number from 1 to the number of --witness keys "
            f"({len(witnesses)})"
        )
    return TrustRoots(tuple(keys), tuple(witnesses), quorum or 0)


def decide(
    roots: TrustRoots,
    origin: str,
    ledger_key: bytes,
    note: str,
    statements: list[object],
) -> TrustDecision:
    """Judge the file's ledger key against ``roots``: ``note`` is its checkpoint (with any
    cosignature lines), ``statements`` the witness log-key statements it carries. The
    note's own signature by ``ledger_key`` was checked by the caller."""
    decision = TrustDecision(False, format_public_key(ledger_key))
    if not roots:
        return decision
    problems: list[str] = []
    key_trusted = False
    if roots.ledger_keys:
        match = next((k for k in roots.ledger_keys if k.public_raw == ledger_key), None)
        if match is None:
            problems.append(
                f"the ledger key {decision.ledger_key} is not a trusted ledger key "
                f"({roots.ledger_keys[0].source})"
            )
        else:
            key_trusted = True
            decision.roots.append(match.source)
    if roots.witnesses:
        try:
            cosigned = verify_cosignatures(note, list(roots.witnesses))
        except CheckpointError as e:
            problems.append(f"witness cosignatures: {e}")
            cosigned = {}
        vouching = _vouching(roots.witnesses, origin, ledger_key, statements)
        counted = [
            w.name
            for w in roots.witnesses
            if w.name in cosigned and (key_trusted or w.name in vouching)
        ]
        if len(counted) >= roots.needed:
            decision.witnesses = counted
            what = "cosigned the checkpoint" + ("" if key_trusted else " and vouch for the key")
            decision.roots.append(
                f"witnesses {', '.join(counted)} {what} (quorum {roots.needed} of "
                f"{len(roots.witnesses)})"
            )
        else:
            missing = [w.name for w in roots.witnesses if w.name not in counted]
            why = (
                ""
                if key_trusted
                else f"; {len(vouching)} signed a statement naming this ledger key"
            )
            problems.append(
                f"{len(counted)} of the trusted witnesses vouch for this checkpoint, quorum "
                f"{roots.needed} (not: {', '.join(missing)}; {len(cosigned)} cosigned it{why})"
            )
    if problems:
        decision.problem = "; ".join(problems)
        decision.roots = []
        return decision
    decision.trusted = True
    return decision


def _vouching(
    witnesses: tuple[Cosigner, ...], origin: str, ledger_key: bytes, statements: list[object]
) -> set[str]:
    """Names of the trusted witnesses whose signed statement names ``ledger_key`` as a key
    of the log ``origin``."""
    out: set[str] = set()
    by_name = {w.name: w for w in witnesses}
    for record in statements:
        try:
            st: LogKeyStatement = statement_from_json(record)
        except CheckpointError:
            continue  # an unknown or malformed record is ignored, as unknown signatures are
        w = by_name.get(st.witness)
        if (
            w is not None
            and st.origin == origin
            and any(raw == ledger_key and name == origin for name, raw in st.log_keys)
            and verified(st, w)
        ):
            out.add(w.name)
    return out
