"""The real `adaptr merge` / `adaptr export` commands: results, and bad input that writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import dump_registry, run_cli

from .conftest import publish_lora


@pytest.fixture(scope="module")
def cli_registry_template(tmp_path_factory, sharded_base_dir, sharded_bf16_base_dir) -> Path:
    """a-v1, b-v1 (r=4) and r8-v1 (r=8) on `tiny`; s-v1 stacked on a-v1; other-v1 on `tiny16`;
    ia3-v1 that claims to be an IA3 adapter. Built once, copied for each test."""
    from adaptr import Registry
    from adaptr.bases import add_local_base

    root = tmp_path_factory.mktemp("cli-template") / "registry"
    registry = Registry.init(root)
    add_local_base(registry, "tiny", sharded_base_dir)
    add_local_base(registry, "tiny16", sharded_bf16_base_dir)
    a = publish_lora(registry, "a", seed=1)
    publish_lora(registry, "b", seed=2)
    publish_lora(registry, "r8", seed=3, r=8)
    publish_lora(registry, "s", seed=4, target_modules=("q_proj", "o_proj"),
                 parents=[(a, "stacked", {"mode": "stack"})])
    publish_lora(registry, "other", base="tiny16", seed=5)
    publish_lora(registry, "ia3", seed=6, config_changes={"peft_type": "IA3"})
    registry.close()
    return root


@pytest.fixture
def cli_registry(cli_registry_template, tmp_path):
    from adaptr import Registry

    root = tmp_path / "registry"
    shutil.copytree(cli_registry_template, root)
    registry = Registry(root / "adaptr.db")
    yield registry
    registry.close()


BAD_MERGES = [
    (["a", "b", "--method", "nope", "--name", "x"], "unknown merge method"),
    (["a", "b", "--method", "linear", "--weights", "1,2,3", "--name", "x"], "3 weight(s) for 2 adapters"),
    (["a", "b", "--method", "linear", "--weights", "1,x", "--name", "x"], "not a comma-separated list"),
    (["a", "other", "--method", "linear", "--name", "x"], "different bases"),
    (["a", "r8", "--method", "ties", "--density", "0.5", "--name", "x"], "one rank"),
    (["a", "b", "--method", "ties", "--name", "x"], "needs --density"),
    (["a", "b", "--method", "linear", "--density", "0.5", "--name", "x"], "not used by method linear"),
    (["a", "b", "--method", "linear"], "needs --name"),
    (["a", "a", "--method", "linear", "--name", "x"], "listed twice"),
    (["a", "b", "--method", "linear", "--name", "../x"], "invalid adapter name"),
    (["s", "b", "--method", "linear", "--name", "x"], "stacked on a-v1"),
    (["a", "--into-base", "--dtype", "int8"], "unknown dtype"),
    (["a", "b", "--into-base"], "merges one adapter"),
    (["a", "--into-base", "--method", "linear"], "--method is for combining"),
    (["a", "--into-base", "--name", "tiny"], "already exists"),
    (["ia3-v1", "--into-base"], "LoRA adapters only"),
    (["nosuch", "--into-base"], "unknown adapter ref"),
    (["a"], "merge what?"),
]


@pytest.mark.parametrize("args,message", BAD_MERGES, ids=[m for _, m in BAD_MERGES])
def test_bad_merge_exits_2_and_writes_nothing(cli_registry, args, message):
    before = dump_registry(cli_registry.root)
    proc = run_cli("merge", *args, registry=cli_registry)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert dump_registry(cli_registry.root) == before


def test_merge_commands(cli_registry):
    proc = run_cli("merge", "s", "--into-base", "--name", "tiny-s", "--dtype", "fp32", registry=cli_registry,
                   check=True)
    assert proc.stdout.strip() == "tiny-s"
    base = cli_registry.base("tiny-s")
    assert base.record.merge.chain == ["a-v1", "s-v1"] and base["dtype"] == "F32"
    proc = run_cli("merge", "a", "b", "--method", "ties", "--weights", "0.6,0.4", "--density", "0.5",
                   "--name", "mix", "--json", registry=cli_registry, check=True)
    run = json.loads(proc.stdout)
    assert run["status"] == "succeeded" and run["output_ref"] == "mix-v1" and run["stage"] == "merge"
    mix = cli_registry.resolve("mix-v1")
    assert [p["params"] for p in mix["parents"]] == [{"method": "ties", "weight": 0.6, "density": 0.5},
                                                      {"method": "ties", "weight": 0.4, "density": 0.5}]
    plugins = json.loads(run_cli("plugins", "--json", registry=cli_registry, check=True).stdout)
    assert any("merge" in p["stages"] for p in plugins)


def test_export_adapter_loads_with_peft(cli_registry, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    run_cli("export", "a-v1", str(out), registry=cli_registry, check=True)
    meta = json.loads((out / "adaptr.json").read_text())
    assert meta["kind"] == "adapter" and meta["ref"] == "a-v1" and meta["record"]["sha256"]
    assert not (out / "adaptr-manifest.json").exists()
    model = AutoModelForCausalLM.from_pretrained(cli_registry.base("tiny")["path"])
    assert isinstance(PeftModel.from_pretrained(model, out), PeftModel)


def test_export_stacked_chain_has_parents_and_load_order(cli_registry, tmp_path):
    out = tmp_path / "out"
    run_cli("export", "s", str(out), registry=cli_registry, check=True)
    meta = json.loads((out / "adaptr.json").read_text())
    assert meta["chain"] == ["a-v1", "s-v1"]
    assert [o["path"] for o in meta["load_order"]] == ["stacked/01-a-v1", "stacked/02-s-v1"]
    assert (out / "stacked/01-a-v1/adapter_model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()  # loading the top level alone must fail
    note = (out / "LOAD_ORDER.md").read_text()
    assert "load_adapter('stacked/02-s-v1', adapter_name='s-v1')" in note
    assert "set_adapter(['s-v1', 'a-v1'])" in note
    assert {e["relation"] for e in meta["lineage"]} == {"stacked"}


def test_export_merged_equals_streaming_merge(cli_registry, tmp_path, model_tensors):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    run_cli("export", "s", str(out), "--merged", "--dtype", "fp32", registry=cli_registry, check=True)
    run_cli("merge", "s", "--into-base", "--name", "tiny-s", "--dtype", "fp32", registry=cli_registry, check=True)
    exported, registered = model_tensors(out), model_tensors(cli_registry.base("tiny-s")["path"])
    assert exported.keys() == registered.keys()
    assert all(torch.equal(exported[k], registered[k]) for k in exported)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    assert json.loads((out / "adaptr.json").read_text())["kind"] == "merged_model"
    copy = tmp_path / "derived"
    run_cli("export", "tiny-s", str(copy), registry=cli_registry, check=True)
    assert model_tensors(copy).keys() == exported.keys()
    meta = json.loads((copy / "adaptr.json").read_text())
    assert meta["kind"] == "base" and "derived base" in meta["base_note"]


def test_export_into_non_empty_dir_refused(cli_registry, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before, listing = dump_registry(cli_registry.root), sorted(tmp_path.rglob("*"))
    for extra in ([], ["--merged"]):
        proc = run_cli("export", "a-v1", str(out), *extra, registry=cli_registry)
        assert proc.returncode == 2 and "not empty" in proc.stderr
    proc = run_cli("export", "nosuch", str(tmp_path / "new"), registry=cli_registry)
    assert proc.returncode == 2 and "nosuch" in proc.stderr
    assert sorted(tmp_path.rglob("*")) == listing and (out / "keep.txt").read_text() == "mine"
    assert dump_registry(cli_registry.root) == before
