"""`adaptr push`: one tagged commit per version, a model card, adaptr.json, no pickles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import run_cli

from .helpers import card_metadata, publish, record_at


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_makes_one_tagged_commit_with_card_and_record(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    sft = publish(reg, lora_sources[0], "sft")

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    assert "pushed sft-v1 to alice/sft@v1" in proc.stdout
    assert "adapter_model.safetensors" in proc.stderr  # the upload progress bar
    repo = hub.repos["alice/sft"]
    commit = repo.tags["v1"]
    assert repo.branches["main"] == commit
    initial = next(sha for sha, c in repo.commits.items() if c["parent"] is None)
    assert repo.commits[commit]["parent"] == initial  # committed on top of the head it saw
    assert sorted(repo.commits[commit]["files"]) == [
        ".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors", "adaptr.json",
        "loss.png"]  # the record has a loss curve: its plot goes with the card
    assert hub.count("PUT", r"^/lfs-upload/") == 2  # the weights and the plot went through LFS

    row = reg.resolve("sft-v1")
    assert (row["hub_repo"], row["hub_commit"]) == ("alice/sft", commit)

    record = record_at(hub, "alice/sft", "v1")
    assert (record["ref"], record["name"], record["version"], record["stage"]) == ("sft-v1", "sft", 1, "sft")
    assert record["sha256"] == sft["sha256"]
    assert record["config"] == {"learning_rate": 1e-4, "epochs": 1}
    assert record["metrics"] == {"train_loss": 1.25}
    base = reg.base("tiny")
    assert record["base"]["config_sha256"] == base["config_sha256"]
    assert record["base"]["source_kind"] == "local" and record["base"]["hub_id"] is None
    version_dir = Path(sft["path"])
    weights = version_dir / "adapter_model.safetensors"
    assert record["files"]["adapter_model.safetensors"] == {"sha256": _sha256(weights), "size": weights.stat().st_size}
    assert hub.read_file("alice/sft", "v1", "adapter_model.safetensors") == weights.read_bytes()
    # adapter_config.json goes without the local base's path (it names this machine), as listed.
    pushed_config = hub.read_file("alice/sft", "v1", "adapter_config.json")
    assert record["files"]["adapter_config.json"] == {"sha256": hashlib.sha256(pushed_config).hexdigest(),
                                                      "size": len(pushed_config)}
    local_config = json.loads((version_dir / "adapter_config.json").read_text())
    assert json.loads(pushed_config) == {**local_config, "base_model_name_or_path": None, "revision": None}
    assert sorted(record["files"]) == ["adapter_config.json", "adapter_model.safetensors"]

    card = hub.read_file("alice/sft", "v1", "README.md").decode()
    meta = card_metadata(card)
    assert meta["library_name"] == "peft"
    assert meta["base_model_relation"] == "adapter"
    assert "base_model" not in meta  # a local base has no Hub id
    assert {"adaptr", "peft", "lora", "sft"} <= set(meta["tags"])
    assert meta["adaptr"]["ref"] == "sft-v1" and meta["adaptr"]["lineage"] == []
    assert "learning_rate" in card and "train_loss" in card


def test_repush_of_an_unchanged_version_commits_and_uploads_nothing(registry_with_base, lora_sources, hub,
                                                                     hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env, check=True)
    commits = dict(hub.repos["alice/sft"].commits)
    writes = [r for r in hub.requests if r[0] in ("POST", "PUT")]

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", "--json", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["status"] == "up-to-date"
    assert hub.repos["alice/sft"].commits == commits
    new_writes = [r for r in hub.requests if r[0] in ("POST", "PUT")][len(writes):]
    assert [path for _, path, _ in new_writes] == ["/api/repos/create"]  # exist_ok: answered 409


def test_child_pushed_after_its_parent_links_it_in_card_and_record(registry_with_base, lora_sources, hub,
                                                                    hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    publish(reg, lora_sources[1], "dpo", parents=[("sft-v1", "continued")], stage="dpo")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env, check=True)

    proc = run_cli("push", "dpo-v1", "--repo", "alice/dpo", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    sft_commit = hub.repos["alice/sft"].tags["v1"]
    parent = record_at(hub, "alice/dpo", "v1")["parents"][0]
    assert parent["ref"] == "sft-v1" and parent["relation"] == "continued"
    assert parent["hub"] == {"repo": "alice/sft", "revision": "v1", "commit": sft_commit}
    card = hub.read_file("alice/dpo", "v1", "README.md").decode()
    assert card_metadata(card)["adaptr"]["lineage"] == [
        {"ref": "sft-v1", "relation": "continued", "hub": "alice/sft@v1"}]
    assert f"{hub.url}/alice/sft/tree/v1" in card


def test_next_version_is_a_new_commit_on_top_with_its_own_tag(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    publish(reg, lora_sources[1], "sft", parents=[("sft-v1", "continued")])

    proc = run_cli("push", "sft-v2", "--repo", "alice/sft", "--with-parents", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    repo = hub.repos["alice/sft"]
    assert repo.commits[repo.tags["v2"]]["parent"] == repo.tags["v1"]
    assert repo.branches["main"] == repo.tags["v2"]
    assert record_at(hub, "alice/sft", "v2")["parents"][0]["hub"]["commit"] == repo.tags["v1"]
