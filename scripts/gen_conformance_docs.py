"""Write docs/conformance.md from the conformance matrix's own parameters.

    python scripts/gen_conformance_docs.py          # rewrite docs/conformance.md
    python scripts/gen_conformance_docs.py --check  # exit 1 if docs/conformance.md is out of date

The table comes from tests/conformance/matrix.py, the module the tests parametrize over, so a cell
the docs call `pass` or `refused` is a test asserting exactly that.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "conformance.md"


def render() -> str:
    spec = importlib.util.spec_from_file_location("conformance_matrix", REPO / "tests" / "conformance" / "matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module.table()


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/gen_conformance_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
