"""docs/conformance.md is the matrix the tests run, cell for cell."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

from .matrix import ALL_CELLS, CELLS, FAMILIES, OPS, counts, table


def test_docs_table_is_generated_from_the_matrix():
    assert (REPO / "docs" / "conformance.md").read_text() == table(), (
        "docs/conformance.md is stale: run python scripts/gen_conformance_docs.py")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_conformance_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_matrix_covers_what_the_issue_asks_for():
    assert set(FAMILIES) == {"llama", "qwen2", "gpt2"}
    assert len(ALL_CELLS) == len(FAMILIES) * len({c.config for c in ALL_CELLS}) * len(OPS)
    total = counts()
    assert total["pass"] + total["refused"] == len(CELLS)
    assert total["pass"] > 500 and total["refused"] > 50
