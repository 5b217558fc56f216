"""A few trials of benchmarks/checkpoint_crash.py: SIGKILL during checkpoint saves, then resume and gc."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoint_crash.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("checkpoint_crash", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_kill_during_saves_leaves_a_verifying_checkpoint_and_gc_cleans_the_rest(tmp_path):
    result = _benchmark().run_trials(3, seed=7, directory=tmp_path)
    for outcome in result["outcomes"]:
        assert outcome["status"] == "interrupted"
        assert outcome["picked_verifies"] and outcome["all_recorded_verify"], outcome
        assert not any(outcome["left_after_gc"].values()), outcome
    assert result["all_ok"]
