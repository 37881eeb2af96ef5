"""RFC 9162 (same as RFC 6962) Merkle tree hashing, proofs and verification over SHA-256.

Standard library only. Two halves:

* Verification. ``verify_inclusion`` and ``verify_consistency`` follow RFC 9162 sections
  2.1.3.2 and 2.1.4.2 step by step; an offline receipt verifier needs nothing else.
* Storage-backed generation. The ledger stores hashes of *perfect* subtrees only, keyed
  ``(level, index)``: node (level, index) covers leaves [index * 2**level,
  (index + 1) * 2**level), level 0 being the leaf hashes. A perfect subtree never changes
  once its last leaf is in, so stored rows are write-once, and any older tree size can
  still be proven from them. The RFC 9162 tree of n leaves is a right-leaning spine over
  the perfect subtrees of the compact range [0, n) (one per set bit of n, largest first,
  see ``frontier_keys``); the nodes on the right of that spine that are not perfect are
  recomputed from the compact range. So a root or proof needs O(log n) stored nodes, and
  each function fetches them with one ``NodeReader`` call (one query for SQL backends).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from computeproof.errors import ProofError, StoreError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeKey = tuple[int, int]
"""(level, index) of a perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)."""

NodeReader = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]
"""Returns the stored hashes of the requested perfect-subtree nodes, in one round trip."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return MTH over leaf hashes by the RFC 9162 2.1.1 recursion (for tests and small trees)."""

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return hashes[lo]
        k = 1 << ((n - 1).bit_length() - 1)  # largest power of two smaller than n
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    if not hashes:
        return EMPTY_ROOT
    return mth(0, len(hashes))


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """Return the root of a tree from the hashes of its compact range [0, size), left to right."""
    if not frontier:
        return EMPTY_ROOT
    # The spine leans right: the smallest subtrees join first.
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) --------------------------------------------


def _check_proof_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what} hash {i} is {len(h)} bytes, not {HASH_SIZE}")


def _path_length(index: int, size: int) -> int:
    """Hashes in the audit path of node ``index`` among ``size`` nodes of its level."""
    # Below the highest bit where index and size - 1 differ, the path runs inside a
    # perfect subtree (one sibling a level); above it, one hash per remaining left subtree.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``."""
    if index < 0 or size < 0:
        raise ProofError(f"leaf index {index} and tree size {size} must not be negative")
    if index >= size:
        raise ProofError(f"leaf index {index} is out of range for tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE}")
    expected = _path_length(index, size)
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} in tree size {size} has {len(proof)} hashes, "
            f"expected {expected}"
        )
    _check_proof_hashes(proof, "inclusion proof")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise ProofError(
            f"inclusion proof for leaf {index} does not lead to the given root of tree size {size}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (``size2``, ``root2``) extends the tree (``size1``, ``root1``)."""
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes {size1} and {size2} must not be negative")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}: a log never shrinks")
    if size1 == 0:
        # RFC 9162 2.1.4 defines proofs for 0 < size1 only. Every tree extends the empty
        # one, so a caller with no earlier checkpoint has nothing to check.
        raise ProofError("consistency proofs need size1 > 0: every tree extends the empty tree")
    if size1 == size2:
        if proof:
            raise ProofError(
                f"sizes are equal ({size1}) so the consistency proof must be empty, "
                f"got {len(proof)} hashes"
            )
        if root1 != root2:
            raise ProofError(f"sizes are equal ({size1}) but the roots differ")
        return
    # The proof is the last perfect subtree of [0, size1) (left out when size1 is a power of
    # two: it is root1 itself) and that subtree's audit path in the tree of size2.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    expected = _path_length(index, ((size2 - 1) >> level) + 1) + (1 if index else 0)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof from size {size1} to {size2} has {len(proof)} hashes, "
            f"expected {expected}"
        )
    _check_proof_hashes(proof, "consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to root1 of tree size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to root2 of tree size {size2}")


# --- storage-backed tree --------------------------------------------------------------------


def frontier_keys(size: int) -> list[NodeKey]:
    """Return the nodes of the compact range [0, size): one per set bit of size, largest first."""
    if size < 0:
        raise ProofError(f"tree size {size} must not be negative")
    keys: list[NodeKey] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def nodes_to_store(
    size: int, leaf_hashes: Sequence[bytes], frontier: Sequence[bytes]
) -> tuple[list[tuple[NodeKey, bytes]], list[bytes]]:
    """Append leaf hashes to a tree of ``size`` leaves with compact range ``frontier``.

    Returns every perfect-subtree node that becomes complete (leaves included) and the new
    frontier.
    """
    if size < 0:
        raise StoreError(f"tree size {size} must not be negative")
    if len(frontier) != size.bit_count():
        # The frontier is read from storage: a wrong count means the store is inconsistent.
        raise StoreError(
            f"frontier has {len(frontier)} hashes but a tree of {size} leaves has "
            f"{size.bit_count()}"
        )
    stack = list(frontier)
    out: list[tuple[NodeKey, bytes]] = []
    add = out.append
    sha256 = _sha256
    n = size
    # Binary-counter carry: appending leaf n completes one subtree per trailing one bit of n.
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise StoreError(f"leaf hash {n} is {len(h)} bytes, not {HASH_SIZE}")
        add(((0, n), h))
        m, level = n, 0
        while m & 1:
            h = sha256(b"\x01" + stack.pop() + h).digest()
            m >>= 1
            level += 1
            add(((level, m), h))
        stack.append(h)
        n += 1
    return out, stack


def _audit_path_keys(
    level: int, index: int, size: int
) -> tuple[list[NodeKey], list[NodeKey], list[NodeKey]]:
    """Plan the audit path of perfect node (level, index) in the tree of ``size`` leaves.

    Returns (siblings inside the compact-range subtree that holds the node, bottom up;
    compact-range nodes right of it, to fold into one hash; compact-range nodes left of it,
    nearest first).
    """
    first_leaf = index << level
    left: list[NodeKey] = []
    right: list[NodeKey] = []
    fork_level = -1
    start = 0
    for lv in range(size.bit_length() - 1, -1, -1):
        if size >> lv & 1:
            key = (lv, start >> lv)
            start += 1 << lv
            if fork_level >= 0:
                right.append(key)
            elif first_leaf < start:
                fork_level = lv
            else:
                left.append(key)
    siblings = [(lv, (index >> (lv - level)) ^ 1) for lv in range(level, fork_level)]
    left.reverse()
    return siblings, right, left


def _read_all(read: NodeReader, keys: list[NodeKey]) -> Mapping[NodeKey, bytes]:
    if not keys:
        return {}
    got = read(keys)
    for key in keys:
        h = got.get(key)
        if h is None:
            raise StoreError(f"Merkle node {key} (level, index) is missing from storage")
        if len(h) != HASH_SIZE:
            raise StoreError(f"Merkle node {key} in storage is {len(h)} bytes, not {HASH_SIZE}")
    return got


def _assemble(
    got: Mapping[NodeKey, bytes],
    siblings: list[NodeKey],
    right: list[NodeKey],
    left: list[NodeKey],
) -> list[bytes]:
    proof = [got[k] for k in siblings]
    if right:
        # Not a perfect subtree, so never stored: recompute it from its compact range.
        proof.append(root_from_frontier([got[k] for k in right]))
    proof.extend(got[k] for k in left)
    return proof


def root(size: int, read: NodeReader) -> bytes:
    """Return the root of the first ``size`` leaves of a stored tree."""
    keys = frontier_keys(size)
    got = _read_all(read, keys)
    return root_from_frontier([got[k] for k in keys])


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is out of range for tree size {size}")
    siblings, right, left = _audit_path_keys(0, index, size)
    got = _read_all(read, siblings + right + left)
    return _assemble(got, siblings, right, left)


def consistency_proof(size1: int, size2: int, read: NodeReader) -> list[bytes]:
    """Return the RFC 9162 consistency proof from tree size ``size1`` to ``size2``."""
    if size1 < 0 or size1 > size2:
        raise ProofError(f"no consistency proof from tree size {size1} to {size2}")
    if size1 == 0:
        raise ProofError("consistency proofs need size1 > 0: every tree extends the empty tree")
    if size1 == size2:
        return []
    # Same shape as verify_consistency: the last perfect subtree of [0, size1) and its
    # audit path in the larger tree.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    siblings, right, left = _audit_path_keys(level, index, size2)
    keys = siblings + right + left
    if index:
        keys.append((level, index))
    got = _read_all(read, keys)
    proof = _assemble(got, siblings, right, left)
    if index:
        proof.insert(0, got[(level, index)])
    return proof


class MemoryNodes:
    """Dict-backed perfect-subtree store: the reference that ledger backends are tested against."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.frontier: list[bytes] = []
        self.size = 0
        self.reads = 0  # read() calls, so tests can check one round trip a proof

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append leaf hashes and store every node they complete."""
        new, self.frontier = nodes_to_store(self.size, leaf_hashes, self.frontier)
        self.nodes.update(new)
        self.size += len(leaf_hashes)

    def read(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Return the stored hashes of ``keys`` (a ``NodeReader``); absent ones are left out."""
        self.reads += 1
        nodes = self.nodes
        return {k: nodes[k] for k in keys if k in nodes}

    def root(self, size: int | None = None) -> bytes:
        """Return the root at ``size`` leaves (default: all of them)."""
        return root(self.size if size is None else size, self.read)
