"""`adaptr pull`: verified downloads, lineage rebuilt, plain PEFT repos imported."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import dump_registry, run_cli

from adaptr import Registry
from adaptr.bases import add_local_base
from adaptr.store import verify

from .helpers import pushed_chain, upload_folder


def _lineage(reg: Registry) -> dict:
    return {a["ref"]: [(p["ref"], p["relation"]) for p in a["parents"]] for a in reg.adapters()}


def _fresh_registry(path: Path, tiny_base_dir: Path | None) -> Registry:
    reg = Registry.init(path)
    if tiny_base_dir is not None:
        add_local_base(reg, "tiny", tiny_base_dir)
    return reg


def test_pull_with_parents_rebuilds_the_lineage_in_an_empty_registry(registry_with_base, lora_sources,
                                                                       tiny_base_dir, hub, hub_env, tmp_path):
    source = registry_with_base
    pushed_chain(source, lora_sources, hub_env)
    assert set(hub.repos) == {"alice/sft", "alice/dpo"}
    target = _fresh_registry(tmp_path / "other", tiny_base_dir)

    proc = run_cli("pull", "alice/dpo@v1", "--with-parents", registry=target, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    assert "pulled alice/dpo" in proc.stdout
    assert _lineage(target) == _lineage(source) == {
        "sft-v1": [], "sft-v2": [("sft-v1", "continued")], "dpo-v1": [("sft-v2", "stacked")]}
    for ref in ("sft-v1", "sft-v2", "dpo-v1"):
        mine, theirs = target.resolve(ref), source.resolve(ref)
        verify(Path(mine["path"]), mine["sha256"])
        assert sorted(p.name for p in Path(mine["path"]).iterdir()) == [
            "adapter_config.json", "adapter_model.safetensors", "adaptr-manifest.json"]
        assert (Path(mine["path"]) / "adapter_model.safetensors").read_bytes() == \
            (Path(theirs["path"]) / "adapter_model.safetensors").read_bytes()
        assert (mine["hub_repo"], mine["hub_commit"]) == (theirs["hub_repo"], theirs["hub_commit"])
        assert (mine["stage"], mine["config"], mine["metrics"]) == (theirs["stage"], theirs["config"],
                                                                    theirs["metrics"])
        assert mine["base"] == "tiny"

    before = dump_registry(target.root)
    again = run_cli("pull", "alice/dpo@v1", "--with-parents", registry=target, env=hub_env)
    assert again.returncode == 0, again.stderr
    assert "already registered as dpo-v1" in again.stdout
    assert dump_registry(target.root) == before


def test_pull_of_a_version_whose_parents_are_local_reuses_them(registry_with_base, lora_sources, hub,
                                                               hub_env):
    reg = registry_with_base
    pushed_chain(reg, lora_sources, hub_env)
    before = dump_registry(reg.root)

    proc = run_cli("pull", "alice/sft@v2", "--json", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"ref": "sft-v2", "repo": "alice/sft", "revision": "v2",
                                        "status": "present"}]
    assert dump_registry(reg.root) == before


def test_pull_without_parents_names_the_missing_parent(registry_with_base, lora_sources, tiny_base_dir, hub,
                                                        hub_env, tmp_path):
    pushed_chain(registry_with_base, lora_sources, hub_env)
    target = _fresh_registry(tmp_path / "other", tiny_base_dir)
    before = dump_registry(target.root)

    proc = run_cli("pull", "alice/dpo", registry=target, env=hub_env)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: dpo-v1's parent sft-v2 (alice/sft@v2) is not in this registry "
        "(hint: pass --with-parents to pull it too)"]
    assert dump_registry(target.root) == before


def test_pull_without_the_base_explains_how_to_register_it(registry_with_base, lora_sources, hub, hub_env,
                                                           tmp_path):
    pushed_chain(registry_with_base, lora_sources, hub_env)
    target = _fresh_registry(tmp_path / "other", None)
    before = dump_registry(target.root)

    proc = run_cli("pull", "alice/sft@v1", registry=target, env=hub_env)

    assert proc.returncode == 2
    line, = proc.stderr.strip().splitlines()
    assert line.startswith("error: sft-v1 was trained on base 'tiny' (")
    assert "no registered base matches it (hint: register that model first " \
           "(`adaptr base add tiny --from" in line
    assert dump_registry(target.root) == before


def test_pull_of_a_plain_peft_repo_imports_it_on_its_base(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    upload_folder(lora_sources[0], "bob/plain-lora", hub_env)

    proc = run_cli("pull", "bob/plain-lora", registry=reg, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    adapter = reg.resolve("plain-lora-v1")
    assert (adapter["base"], adapter["stage"], adapter["parents"]) == ("tiny", "import", [])
    assert adapter["hub_repo"] == "bob/plain-lora"
    assert adapter["hub_commit"] == hub.repos["bob/plain-lora"].branches["main"]
    files = sorted(p.name for p in Path(adapter["path"]).iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "adaptr-manifest.json"]  # no card
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (Path(adapter["path"]) / name).read_bytes() == (lora_sources[0] / name).read_bytes()


def test_pull_of_a_plain_peft_repo_for_an_unknown_base_says_how_to_add_it(registry, lora_sources, hub,
                                                                           hub_env):
    upload_folder(lora_sources[0], "bob/plain-lora", hub_env)
    before = dump_registry(registry.root)

    proc = run_cli("pull", "bob/plain-lora", registry=registry, env=hub_env)

    assert proc.returncode == 2
    source = json.loads((lora_sources[0] / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert proc.stderr.strip().splitlines() == [
        f"error: bob/plain-lora is a PEFT adapter for base {source!r}, which is not registered "
        f"(hint: register it (`adaptr base add NAME --from {source}`), then pull again)"]
    assert dump_registry(registry.root) == before


def test_pull_of_a_pickled_peft_repo_is_refused(registry_with_base, lora_sources, hub, hub_env, tmp_path):
    from lora_dirs import pickled_only

    upload_folder(pickled_only(lora_sources[0], tmp_path / "pickled"), "bob/old-lora", hub_env)
    before = dump_registry(registry_with_base.root)

    proc = run_cli("pull", "bob/old-lora", registry=registry_with_base, env=hub_env)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: bob/old-lora has no .safetensors weights (hint: adaptr never loads pickled weights; convert "
        "the adapter with PEFT's save_pretrained(safe_serialization=True))")
    assert dump_registry(registry_with_base.root) == before
    assert hub.count("GET", r"adapter_model\.bin") == 0  # the pickle was never downloaded


def test_a_repo_name_that_is_no_adapter_name_asks_for_name(registry_with_base, lora_sources, hub, hub_env):
    upload_folder(lora_sources[0], "bob/lora-v2", hub_env)
    before = dump_registry(registry_with_base.root)

    proc = run_cli("pull", "bob/lora-v2", registry=registry_with_base, env=hub_env)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: bob/lora-v2: invalid adapter name 'lora-v2': it ends like a version (-vN) "
        "(hint: pass --name NAME to register it under another name)")
    assert dump_registry(registry_with_base.root) == before

    renamed = run_cli("pull", "bob/lora-v2", "--name", "bobs-lora", registry=registry_with_base, env=hub_env)

    assert renamed.returncode == 0, renamed.stderr
    assert "as bobs-lora-v1" in renamed.stdout
    assert registry_with_base.resolve("bobs-lora-v1")["stage"] == "import"
