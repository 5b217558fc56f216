"""`adaptr eval`, `compare`, `lineage --metric` and `ls --sort` through the real console script."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

from .conftest import counts

pytestmark = pytest.mark.slow


def _eval(registry, *args):
    proc = run_cli("eval", *args, "--json", registry=registry)
    assert proc.returncode == 0, proc.stderr
    return {r["ref"]: r for r in json.loads(proc.stdout)}


def test_eval_records_once_and_lineage_shows_the_change(eval_registry, heldout_prefs):
    first = _eval(eval_registry, "sft-v1", "dpo-v1", "--data", str(heldout_prefs))
    assert all(r["computed"] for r in first.values())
    assert first["sft-v1"]["reference"] == "tiny" and first["dpo-v1"]["reference"] == "sft-v1"
    for result in first.values():
        assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and result["eval_set"]["rows"] == 22
    before = counts(eval_registry)
    again = _eval(eval_registry, "dpo-v1", "sft-v1", "--data", str(heldout_prefs))
    assert not any(r["computed"] for r in again.values())
    assert again["dpo-v1"]["metrics"] == first["dpo-v1"]["metrics"]
    assert counts(eval_registry) == before  # nothing computed, no run recorded
    forced = _eval(eval_registry, "dpo-v1", "--data", str(heldout_prefs), "--force")
    assert forced["dpo-v1"]["computed"] and forced["dpo-v1"]["metrics"] == first["dpo-v1"]["metrics"]

    accuracy = {ref: r["metrics"]["accuracy"] for ref, r in first.items()}
    proc = run_cli("lineage", "dpo-v1", "--metric", "accuracy", "--json", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(proc.stdout)["metric"]["values"]
    assert values["dpo-v1"] == {"value": accuracy["dpo-v1"], "parent": "sft-v1",
                                "delta": pytest.approx(accuracy["dpo-v1"] - accuracy["sft-v1"])}
    assert values["sft-v1"]["value"] == accuracy["sft-v1"]
    text = run_cli("lineage", "dpo-v1", "--metric", "preference.accuracy", registry=eval_registry).stdout
    dpo_line = text.splitlines()[0]
    assert "dpo-v1" in dpo_line and f"accuracy {accuracy['dpo-v1']:.4f}" in dpo_line
    assert f"{accuracy['dpo-v1'] - accuracy['sft-v1']:+.4f}" in dpo_line
    sft_line = next(line for line in text.splitlines() if "sft-v1" in line)
    assert f"accuracy {accuracy['sft-v1']:.4f}" in sft_line


def test_ls_sort_and_compare(eval_registry, heldout_sft, heldout_prompts):
    losses = {ref: r["metrics"]["loss"] for ref, r in
              _eval(eval_registry, "sft-v1", "dpo-v1", "tiny", "--data", str(heldout_sft)).items()}
    assert losses["tiny"] > min(losses["sft-v1"], losses["dpo-v1"])  # training on the same task helps
    proc = run_cli("ls", "--sort", "loss", "--json", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [a["ref"] for a in listed] == sorted(["sft-v1", "dpo-v1"], key=losses.get)  # lowest loss first
    assert listed[0]["metric"] == {"name": "loss.loss", "value": losses[listed[0]["ref"]]}
    _eval(eval_registry, "sft-v1", "dpo-v1", "--data", str(heldout_prompts), "--set", "max_new_tokens=4")
    proc = run_cli("compare", "sft-v1", "dpo-v1", "--json", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    comparison = json.loads(proc.stdout)
    loss_row = next(m for m in comparison["evaluations"] if m["metric"] == "loss")
    assert loss_row["delta"] == pytest.approx(losses["dpo-v1"] - losses["sft-v1"])
    assert loss_row["higher_is_better"] is False
    assert len(comparison["generations"]) == 12
    row = comparison["generations"][0]
    assert row["row"] == 1 and row["expected"] == "The answer is 9." and "a_output" in row and "b_output" in row
    text = run_cli("compare", "sft-v1", "dpo-v1", registry=eval_registry).stdout
    assert "sft-v1 OUTPUT" in text and "dpo-v1 OUTPUT" in text and "B - A" in text


def test_unknown_metric_and_same_version(eval_registry):
    proc = run_cli("lineage", "dpo-v1", "--metric", "accuracy", registry=eval_registry)
    assert proc.returncode == 2 and "no evaluation has recorded a metric 'accuracy'" in proc.stderr
    proc = run_cli("compare", "sft-v1", "sft-v1", registry=eval_registry)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
