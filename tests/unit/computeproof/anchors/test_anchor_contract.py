"""The checked-in compiled registry is what contracts/erc7053_registry.vy compiles to, and
it has the ERC-7053 interface."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]


def _compile() -> dict[str, object]:
    spec = importlib.util.spec_from_file_location(
        "compile_contract", ROOT / "contracts" / "compile.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: dict[str, object] = module.build()
    return built


def test_artifact_is_the_compiled_source() -> None:
    vyper = pytest.importorskip("vyper", reason="recompiling needs vyper (the dev extra)")
    from computeproof.anchors.evm import registry_artifact

    checked_in = registry_artifact()
    assert checked_in["compiler"] == f"vyper {vyper.__version__}", (
        "the artifact was compiled by another vyper than the one installed: install the "
        "dev extra's pinned vyper, or rerun python3 contracts/compile.py and commit"
    )
    built = _compile()
    for name in ("source_sha256", "abi", "bytecode", "bytecode_runtime"):
        assert built[name] == checked_in[name], (
            f"computeproof/anchors/erc7053_registry.json is stale ({name}): run "
            "python3 contracts/compile.py and commit the result"
        )


def test_registry_has_the_erc7053_interface() -> None:
    from computeproof.anchors.evm import ERC7053_ABI, registry_artifact

    def shape(abi: list[dict[str, object]]) -> list[str]:
        return sorted(json.dumps({k: e[k] for k in ("type", "name", "inputs")}, sort_keys=True)
                      for e in abi)  # fmt: skip

    assert shape(registry_artifact()["abi"]) == shape(ERC7053_ABI)
