"""Compile contracts/erc7053_registry.vy into computeproof/anchors/erc7053_registry.json.

Run after changing the contract, with the pinned vyper (pyproject's dev extra):
    python3 contracts/compile.py
tests/unit/computeproof/anchors/test_contract.py recompiles it and fails if the checked-in
ABI or bytecode differ.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "erc7053_registry.vy"
ARTIFACT = ROOT / "computeproof" / "anchors" / "erc7053_registry.json"


def build() -> dict[str, object]:
    """Compile the registry; the artifact as a dict."""
    import vyper
    from vyper.compiler import compile_code

    source = SOURCE.read_text(encoding="utf-8")
    out = compile_code(source, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {
        "contract": "contracts/erc7053_registry.vy",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "compiler": f"vyper {vyper.__version__}",
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def main() -> int:
    """Write the artifact."""
    ARTIFACT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {ARTIFACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
