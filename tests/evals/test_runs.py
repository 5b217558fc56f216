"""Evaluations as runs: --detach, a stage's --eval-data, removal of a version."""

from __future__ import annotations

import json

import pytest

from adaptr import jobs
from adaptr.demo import SFT_DATA, data_file
from conftest import run_cli

from .conftest import counts

pytestmark = pytest.mark.slow


def test_detached_eval_is_a_run(eval_registry, heldout_sft):
    proc = run_cli("eval", "sft-v1", "--data", str(heldout_sft), "--detach", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    run = jobs.wait(eval_registry, run_id, timeout=120)
    assert run["status"] == "succeeded" and run["stage"] == "eval", jobs.tail(run, 30)
    again = json.loads(run_cli("eval", "sft-v1", "--data", str(heldout_sft), "--json",
                               registry=eval_registry, check=True).stdout)
    assert again[0]["computed"] is False and again[0]["run_id"] == run_id
    assert "loss on sft-heldout.jsonl" in "\n".join(jobs.tail(run, 50))


def test_stage_eval_data_lands_in_the_table(eval_registry, heldout_sft):
    proc = run_cli("train", "sft", "--base", "tiny", "--data", str(data_file(SFT_DATA)), "--eval-data",
                   str(heldout_sft), "--max-steps", "2", "--max-length", "64", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sft-v2"
    recorded = json.loads(run_cli("eval", "sft-v2", "--data", str(heldout_sft), "--json",
                                  registry=eval_registry, check=True).stdout)
    assert recorded[0]["computed"] is False and recorded[0]["source"] == "stage"
    assert recorded[0]["run_id"] == eval_registry.resolve("sft-v2")["run_id"]


def test_removing_a_version_removes_its_results(eval_registry, heldout_prefs):
    run_cli("eval", "sft-v1", "dpo-v1", "--data", str(heldout_prefs), registry=eval_registry, check=True)
    assert counts(eval_registry)["evaluations"] == 2
    run_cli("rm", "dpo-v1", registry=eval_registry, check=True)
    assert counts(eval_registry)["evaluations"] == 1
    assert counts(eval_registry)["eval_metrics"] == 4
