"""Tests of computeproof/merkle.py: RFC 9162 vectors, RFC reference, properties."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from computeproof import merkle
from computeproof.errors import ProofError, StoreError
from computeproof.merkle import (
    EMPTY_ROOT,
    MemoryNodes,
    consistency_proof,
    frontier_keys,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_to_store,
    root_from_frontier,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2] / "data" / "rfc9162"
MAX_SIZE = 300


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


INCLUSION_VECTORS = _load("inclusion")
CONSISTENCY_VECTORS = _load("consistency")

# The RFC 6962 / transparency-dev reference tree: these leaf inputs give the roots below.
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _reference_store() -> MemoryNodes:
    store = MemoryNodes()
    store.append([leaf_hash(d) for d in REFERENCE_LEAVES])
    return store


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


# --- a literal transcription of RFC 9162 2.1.3.1 and 2.1.4.1, to compare generated proofs ---


class Reference:
    """MTH, PATH and PROOF exactly as RFC 9162 defines them, memoized over one leaf list."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.hashes = hashes
        self.mth: Callable[[int, int], bytes] = functools.cache(self._mth)

    @staticmethod
    def _split(n: int) -> int:
        return 1 << ((n - 1).bit_length() - 1)

    def _mth(self, lo: int, hi: int) -> bytes:
        if hi - lo == 0:
            return EMPTY_ROOT
        if hi - lo == 1:
            return self.hashes[lo]
        k = self._split(hi - lo)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = self._split(hi - lo)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = self._split(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


# --- known answers ---------------------------------------------------------------------------


def test_hash_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == REFERENCE_ROOTS[0]
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_reference_tree_roots() -> None:
    hashes = [leaf_hash(d) for d in REFERENCE_LEAVES]
    store = _reference_store()
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert store.root(0) == EMPTY_ROOT
    for size in range(1, 9):
        assert root_from_leaf_hashes(hashes[:size]) == REFERENCE_ROOTS[size - 1]
        assert store.root(size) == REFERENCE_ROOTS[size - 1]


@pytest.mark.parametrize(("name", "v"), INCLUSION_VECTORS, ids=[n for n, _ in INCLUSION_VECTORS])
def test_inclusion_vectors(name: str, v: dict[str, Any]) -> None:
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], [_b64(p) for p in v["proof"] or []])
    root = _b64(v["root"])
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, root)
        return
    verify_inclusion(*args, root)
    # Where the vector is on the reference tree, our generator must produce the same proof.
    store = _reference_store()
    index, size = v["leafIdx"], v["treeSize"]
    if size <= store.size and store.root(size) == root:
        assert inclusion_proof(index, size, store.read) == args[3]


@pytest.mark.parametrize(
    ("name", "v"), CONSISTENCY_VECTORS, ids=[n for n, _ in CONSISTENCY_VECTORS]
)
def test_consistency_vectors(name: str, v: dict[str, Any]) -> None:
    proof = [_b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
        return
    verify_consistency(*args)
    store = _reference_store()
    size1, size2 = v["size1"], v["size2"]
    if size2 <= store.size and store.root(size2) == args[4]:
        assert consistency_proof(size1, size2, store.read) == proof


def test_vectors_cover_generation() -> None:
    # Guards the comparison above: the happy paths really are on the reference tree.
    store = _reference_store()
    happy = [v for _, v in INCLUSION_VECTORS if not v["wantErr"] and v["treeSize"] > 1]
    assert happy
    assert all(store.root(v["treeSize"]) == _b64(v["root"]) for v in happy)
    happy = [v for _, v in CONSISTENCY_VECTORS if not v["wantErr"] and v["size1"] < v["size2"]]
    assert happy
    assert all(store.root(v["size2"]) == _b64(v["root2"]) for v in happy)


# --- frontier and storage layout ------------------------------------------------------------


def test_frontier_keys() -> None:
    assert frontier_keys(0) == []
    assert frontier_keys(1) == [(0, 0)]
    assert frontier_keys(8) == [(3, 0)]
    assert frontier_keys(13) == [(3, 0), (2, 2), (0, 12)]
    assert frontier_keys(7) == [(2, 0), (1, 2), (0, 6)]


def test_nodes_to_store_layout() -> None:
    hashes = _leaves(6)
    new, frontier = nodes_to_store(0, hashes, [])
    keys = [k for k, _ in new]
    # Leaves and every perfect subtree completed, in the order they complete.
    assert keys == [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4), (0, 5), (1, 2)]
    nodes = dict(new)
    assert nodes[(2, 0)] == root_from_leaf_hashes(hashes[:4])
    assert nodes[(1, 2)] == root_from_leaf_hashes(hashes[4:6])
    assert frontier == [nodes[k] for k in frontier_keys(6)]
    assert root_from_frontier(frontier) == root_from_leaf_hashes(hashes)


def test_nodes_to_store_rejects_bad_input() -> None:
    with pytest.raises(StoreError, match="frontier has 0 hashes but a tree of 3 leaves has 2"):
        nodes_to_store(3, _leaves(1), [])
    with pytest.raises(StoreError, match="31 bytes"):
        nodes_to_store(0, [b"x" * 31], [])


def test_proofs_read_once_and_report_missing_nodes() -> None:
    store = MemoryNodes()
    store.append(_leaves(100))
    store.reads = 0
    store.root(77)
    inclusion_proof(40, 77, store.read)
    consistency_proof(13, 77, store.read)
    assert store.reads == 3
    store.reads = 0
    assert store.root(0) == EMPTY_ROOT
    assert consistency_proof(5, 5, store.read) == []
    assert store.reads == 0
    with pytest.raises(StoreError, match="missing from storage"):
        inclusion_proof(0, 101, store.read)


def test_proof_requests_out_of_range() -> None:
    store = MemoryNodes()
    store.append(_leaves(10))
    with pytest.raises(ProofError, match="out of range"):
        inclusion_proof(10, 10, store.read)
    with pytest.raises(ProofError, match="out of range"):
        inclusion_proof(-1, 10, store.read)
    with pytest.raises(ProofError, match="size1 > 0"):
        consistency_proof(0, 10, store.read)
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_proof(6, 5, store.read)


def test_verify_messages() -> None:
    hashes = _leaves(10)
    store = MemoryNodes()
    store.append(hashes)
    root10 = store.root()
    proof = inclusion_proof(3, 10, store.read)
    with pytest.raises(ProofError, match="out of range"):
        verify_inclusion(hashes[3], 10, 10, proof, root10)
    with pytest.raises(ProofError, match="has 3 hashes, expected 4"):
        verify_inclusion(hashes[3], 3, 10, proof[:-1], root10)
    with pytest.raises(ProofError, match="does not lead to the given root"):
        verify_inclusion(hashes[4], 3, 10, proof, root10)
    cproof = consistency_proof(6, 10, store.read)
    root6 = store.root(6)
    with pytest.raises(ProofError, match="never shrinks"):
        verify_consistency(10, 6, cproof, root10, root6)
    with pytest.raises(ProofError, match="expected"):
        verify_consistency(6, 10, [*cproof, cproof[0]], root6, root10)
    with pytest.raises(ProofError, match="root1"):
        verify_consistency(6, 10, cproof, root10, root10)
    with pytest.raises(ProofError, match="root2"):
        verify_consistency(6, 10, cproof, root6, root6)


# --- properties ------------------------------------------------------------------------------


def test_every_consistency_pair_verifies() -> None:
    hashes = _leaves(MAX_SIZE, b"pairs")
    store = MemoryNodes()
    store.append(hashes)
    roots = [store.root(n) for n in range(MAX_SIZE + 1)]
    for size2 in range(1, MAX_SIZE + 1):
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, store.read)
            verify_consistency(size1, size2, proof, roots[size1], roots[size2])


@settings(max_examples=50, deadline=None)
@given(size=st.integers(1, MAX_SIZE), salt=st.binary(max_size=4))
@example(size=MAX_SIZE, salt=b"")
@example(size=256, salt=b"")
@example(size=255, salt=b"")
def test_inclusion_every_index(size: int, salt: bytes) -> None:
    hashes = _leaves(size, salt)
    ref = Reference(hashes)
    store = MemoryNodes()
    store.append(hashes)
    root = root_from_leaf_hashes(hashes)
    assert store.root() == root == ref.mth(0, size)
    store.reads = 0
    for index in range(size):
        proof = inclusion_proof(index, size, store.read)
        assert proof == ref.path(index, 0, size)
        verify_inclusion(hashes[index], index, size, proof, root)
    # One read a proof; a one-leaf tree's proof is empty and needs none.
    assert store.reads == (size if size > 1 else 0)


@settings(max_examples=50, deadline=None)
@given(size2=st.integers(1, MAX_SIZE), extra=st.integers(0, 40))
@example(size2=MAX_SIZE, extra=0)
@example(size2=257, extra=3)
@example(size2=128, extra=0)
def test_consistency_every_size1(size2: int, extra: int) -> None:
    # The store holds more leaves than size2: older sizes must stay provable.
    hashes = _leaves(size2 + extra, b"c")
    ref = Reference(hashes)
    store = MemoryNodes()
    store.append(hashes)
    root2 = ref.mth(0, size2)
    assert store.root(size2) == root2
    for size1 in range(1, size2 + 1):
        proof = consistency_proof(size1, size2, store.read)
        assert proof == ref.subproof(size1, 0, size2, True)
        verify_consistency(size1, size2, proof, ref.mth(0, size1), root2)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(0, 40), max_size=12))
def test_batch_splits_store_the_same_nodes(batches: list[int]) -> None:
    total = sum(batches)
    hashes = _leaves(total, b"b")
    batched = MemoryNodes()
    start = 0
    for count in batches:
        batched.append(hashes[start : start + count])
        start += count
        assert batched.root() == root_from_leaf_hashes(hashes[:start])
    single = MemoryNodes()
    for h in hashes:
        single.append([h])
    assert batched.nodes == single.nodes
    assert batched.frontier == single.frontier
    assert batched.size == single.size == total
    assert [k for k, _ in batched.nodes.items() if k[0] == 0] == [(0, i) for i in range(total)]


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(1, 130))
def test_inclusion_rejects_any_flipped_bit(data: st.DataObject, size: int) -> None:
    hashes = _leaves(size, b"f")
    store = MemoryNodes()
    store.append(hashes)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, size, store.read)
    root = store.root()
    parts = [hashes[index], *proof, root]
    part = data.draw(st.integers(0, len(parts) - 1), label="part")
    bit = data.draw(st.integers(0, 255), label="bit")
    parts[part] = _flip(parts[part], bit)
    with pytest.raises(ProofError):
        verify_inclusion(parts[0], index, size, parts[1:-1], parts[-1])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size2=st.integers(1, 130))
def test_consistency_rejects_any_flipped_bit(data: st.DataObject, size2: int) -> None:
    hashes = _leaves(size2, b"g")
    store = MemoryNodes()
    store.append(hashes)
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = consistency_proof(size1, size2, store.read)
    parts = [store.root(size1), *proof, store.root(size2)]
    part = data.draw(st.integers(0, len(parts) - 1), label="part")
    bit = data.draw(st.integers(0, 255), label="bit")
    parts[part] = _flip(parts[part], bit)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, parts[1:-1], parts[0], parts[-1])


def test_module_has_no_third_party_imports() -> None:
    # merkle.py is part of the light core an offline verifier needs: hashlib only.
    source = Path(merkle.__file__).read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    allowed = ("from __future__", "import hashlib", "from collections.abc", "from computeproof")
    assert all(line.startswith(allowed) for line in imports), imports
