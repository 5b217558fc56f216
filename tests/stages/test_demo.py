"""`adaptr demo` runs end to end in a fresh directory, through the real console script."""

from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    proc = run_cli("demo", "--dir", str(tmp_path / "demo"), env={"ADAPTR_REGISTRY": ""})
    assert proc.returncode == 0, proc.stderr
    # The tree `adaptr lineage tiny` draws: sft-v1 on the base, dpo-v1 continuing it, merged back.
    lines = proc.stdout.splitlines()
    sft = next(i for i, line in enumerate(lines) if "base of sft-v1" in line)
    assert "continued dpo-v1" in lines[sft + 1] and "on tiny · dpo" in lines[sft + 1]
    assert "merged dpo-v1-merged" in lines[sft + 2] and "derived base" in lines[sft + 2]
    assert (tmp_path / "demo" / "registry" / "adaptr.db").exists()
    again = run_cli("demo", "--dir", str(tmp_path / "demo"), env={"ADAPTR_REGISTRY": ""})
    assert again.returncode == 2 and "already holds a demo registry" in again.stderr
