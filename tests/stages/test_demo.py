"""`adaptr demo` runs end to end in a fresh directory, through the real console script."""

from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    proc = run_cli("demo", "--dir", str(tmp_path / "demo"), env={"ADAPTR_REGISTRY": ""})
    assert proc.returncode == 0, proc.stderr
    assert "sft-v1 [sft]" in proc.stdout
    assert "dpo-v1 [dpo]  <- continued, reference sft-v1" in proc.stdout
    assert (tmp_path / "demo" / "registry" / "adaptr.db").exists()
    again = run_cli("demo", "--dir", str(tmp_path / "demo"), env={"ADAPTR_REGISTRY": ""})
    assert again.returncode == 2 and "already holds a demo registry" in again.stderr
