"""Evaluations travel with a version: the card's model-index, adaptr.json, and back on pull."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

from adaptr import Registry
from adaptr.bases import add_local_base
from adaptr.demo import data_file

from .helpers import card_metadata, publish, record_at

pytestmark = pytest.mark.slow


def test_results_go_into_the_card_and_come_back_on_pull(registry_with_base, lora_sources, tiny_base_dir,
                                                        hub, hub_env, tmp_path):
    source = registry_with_base
    publish(source, lora_sources[0], "sft")
    publish(source, lora_sources[1], "sft", parents=[("sft-v1", "continued")])
    heldout = data_file("sft-heldout.jsonl")
    proc = run_cli("eval", "sft-v1", "sft-v2", "--data", str(heldout), "--json", registry=source)
    assert proc.returncode == 0, proc.stderr
    computed = {r["ref"]: r for r in json.loads(proc.stdout)}
    run_cli("push", "sft-v2", "--repo", "alice/sft", "--with-parents", registry=source, env=hub_env, check=True)

    meta = card_metadata(hub.read_file("alice/sft", "v2", "README.md").decode())
    (entry,) = meta["model-index"]
    assert entry["name"] == "sft-v2"
    results = {m["name"]: m for r in entry["results"] for m in r["metrics"]}
    assert results["loss.loss"]["value"] == pytest.approx(computed["sft-v2"]["metrics"]["loss"])
    assert results["loss.loss"]["type"] == "loss"
    first = entry["results"][0]
    assert first["task"]["name"] == "loss" and first["dataset"]["name"] == "sft-heldout.jsonl"
    assert first["dataset"]["revision"] == computed["sft-v2"]["eval_set_sha256"]
    record = record_at(hub, "alice/sft", "v2")
    assert record["evaluations"][0]["metrics"] == computed["sft-v2"]["metrics"]

    target = Registry.init(tmp_path / "other")
    add_local_base(target, "tiny", tiny_base_dir)
    run_cli("pull", "alice/sft@v2", "--with-parents", registry=target, env=hub_env, check=True)
    again = json.loads(run_cli("eval", "sft-v1", "sft-v2", "--data", str(heldout), "--json",
                               registry=target, check=True).stdout)
    assert [r["computed"] for r in again] == [False, False]  # pulled, not recomputed
    assert {r["ref"]: r["metrics"] for r in again} == {ref: r["metrics"] for ref, r in computed.items()}
    assert {r["source"] for r in again} == {"hub"}
    lineage = json.loads(run_cli("lineage", "sft-v2", "--metric", "loss.loss", "--json", registry=target,
                                 check=True).stdout)["metric"]["values"]
    assert lineage["sft-v2"]["delta"] == pytest.approx(
        computed["sft-v2"]["metrics"]["loss"] - computed["sft-v1"]["metrics"]["loss"])
    target.close()
