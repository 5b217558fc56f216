"""Checks before training: layering of recipe values, inheritance, drift warnings, changed bases.

All of these stop at `stages.prepare` (validation only): no model loads and nothing is written.
"""

from __future__ import annotations

import json
import shutil

import pytest

from adaptr import StageRequest, plugins
from adaptr.cli.train import build_request
from adaptr.errors import ConflictError, IntegrityError, UsageError
from adaptr.stages import prepare

from conftest import dump_registry


def _params(**given):
    base = {k: None for k in ("base", "parent", "mode", "data", "eval_data", "eval_fraction", "name",
                              "quantize", "save_steps", "config_file")}
    return {**base, "sets": (), **given}


def test_layering_yaml_then_flags_then_set(tmp_path):
    stage = plugins.get_stage("dpo")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("from: sft-v1\ndata: prefs.jsonl\nbeta: 0.5\nlearning_rate: 0.01\nmax_steps: 7\n")
    request = build_request(stage, _params(config_file=str(recipe), sets=("max_steps=9",)),
                            {"learning_rate": 0.02, "beta": None})
    assert (request.parent, request.data, request.mode) == ("sft-v1", "prefs.jsonl", "continue")
    assert request.config == {"beta": 0.5, "learning_rate": 0.02, "max_steps": 9}


def test_unknown_yaml_key_and_mode_without_parent_are_refused(tmp_path):
    stage = plugins.get_stage("sft")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learnig_rate: 0.1\n")
    with pytest.raises(UsageError, match="did you mean 'learning_rate'"):
        build_request(stage, _params(config_file=str(recipe)), {})
    with pytest.raises(UsageError, match="--mode stack needs --from"):
        build_request(stage, _params(mode="stack"), {})


def test_lora_settings_are_inherited_and_others_are_not(sft_registry, dpo_data):
    ctx = prepare(sft_registry, StageRequest(stage="dpo", parent="sft-v1", data=str(dpo_data),
                                             config={"lora_dropout": 0.1}))
    assert (ctx.config.r, ctx.config.lora_alpha) == (8, 16)  # from sft-v1's recorded config
    assert ctx.config.lora_dropout == 0.1  # given, and allowed to differ when continuing
    assert ctx.config.max_steps == -1  # not a LoRA setting: the dpo default


def test_library_drift_from_the_parent_warns(sft_registry, dpo_data):
    parent = sft_registry.resolve("sft-v1")
    record = {**parent.record.to_json(), "libraries": {**parent.record.libraries, "trl": "0.0.1"}}
    with sft_registry.write() as db:
        db.execute("UPDATE adapters SET record = ? WHERE id = ?", [json.dumps(record), parent["id"]])
    ctx = prepare(sft_registry, StageRequest(stage="dpo", parent="sft-v1", data=str(dpo_data)))
    assert any("trl 0.0.1 -> " in warning for warning in ctx.warnings)


def test_a_base_whose_config_changed_is_refused(registry, tiny_base_dir, tmp_path, sft_data):
    from adaptr.bases import add_local_base

    copy = tmp_path / "copy"
    shutil.copytree(tiny_base_dir, copy)
    add_local_base(registry, "copy", copy)
    original = (copy / "config.json").read_text()
    (copy / "config.json").write_text(json.dumps({**json.loads(original), "rope_theta": 1.0}))
    before = dump_registry(registry.root)
    with pytest.raises(IntegrityError, match="base 'copy': config.json has .* bytes"):
        prepare(registry, StageRequest(stage="sft", base="copy", data=str(sft_data)))
    # Same size, other bytes: the new mtime makes verification re-hash the file.
    same_size = original.replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')
    assert same_size != original and len(same_size) == len(original)
    (copy / "config.json").write_text(same_size)
    with pytest.raises(IntegrityError, match="config.json changed since it was registered"):
        prepare(registry, StageRequest(stage="sft", base="copy", data=str(sft_data)))
    assert dump_registry(registry.root) == before
