"""The registry commands through the real `adaptr` console script, with real PEFT adapters."""

import json
import shutil

import pytest
from conftest import dump_registry, run_cli
from lora_dirs import make_lora_dir, pickled_only, with_config, wrong_shapes

ADAPTER_KEYS = {"ref", "name", "version", "base", "stage", "status", "parents", "sha256", "path",
                "created_at"}


@pytest.fixture(scope="session")
def lora_dirs(tiny_base_dir, tmp_path_factory):
    """A real LoRA dir, a second one (r=8), and broken variants of the first."""
    root = tmp_path_factory.mktemp("lora")
    good = make_lora_dir(tiny_base_dir, root / "my adapter")
    return {
        "good": good,
        "r8": make_lora_dir(tiny_base_dir, root / "r8", r=8, seed=1, target_modules=("o_proj",)),
        "pickled": pickled_only(good, root / "pickled"),
        "shapes": wrong_shapes(good, root / "shapes"),
        "ia3": with_config(good, root / "ia3", peft_type="IA3"),
        "rank": with_config(good, root / "rank", r=16),
        "badjson": _bad_json(good, root / "badjson"),
        "nolora": _no_weights(good, root / "nolora"),
    }


def _bad_json(good, out):
    shutil.copytree(good, out)
    (out / "adapter_config.json").write_text("{not json")
    return out


def _no_weights(good, out):
    out.mkdir()
    shutil.copy(good / "adapter_config.json", out)
    return out


@pytest.fixture
def cli_registry(tmp_path, tiny_base_dir):
    """A registry made with `adaptr init` and `adaptr base add`."""
    run_cli("init", cwd=tmp_path, check=True)
    root = tmp_path / "registry"
    run_cli("base", "add", "tiny", "--from", str(tiny_base_dir), registry=root, check=True)
    return root


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_import_lineage_tag_rm(cli_registry, lora_dirs):
    reg = cli_registry
    first = run_cli("import", str(lora_dirs["good"]), "--base", "tiny", registry=reg, check=True)
    assert first.stdout.strip() == "my-adapter-v1"
    run_cli("import", str(lora_dirs["good"]), "--base", "tiny", "--name", "sft", registry=reg, check=True)
    run_cli("import", str(lora_dirs["r8"]), "--base", "tiny", "--name", "sft", "--parent", "sft-v1",
            registry=reg, check=True)
    run_cli("import", str(lora_dirs["good"]), "--base", "tiny", "--name", "dpo", "--parent", "sft",
            "--relation", "stacked", registry=reg, check=True)

    listed = _json(run_cli("ls", "--json", registry=reg))
    assert [a["ref"] for a in listed] == ["dpo-v1", "sft-v2", "sft-v1", "my-adapter-v1"]
    assert all(ADAPTER_KEYS <= set(a) for a in listed)
    assert listed[0]["parents"][0] | {"params": None} == {"ref": "sft-v2", "relation": "stacked",
                                                          "kind": "adapter", "params": None}
    assert listed[1]["stage"] == "import" and listed[1]["status"] == "ready"

    shown = _json(run_cli("show", "sft-v2", "--json", registry=reg))
    assert shown["config"]["r"] == 8 and shown["config"]["peft_type"] == "LORA"
    assert shown["parents"][0]["relation"] == "continued"
    assert sorted(p.name for p in (reg / "adapters" / "sft" / "v2").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "adaptr-manifest.json"]

    tree = run_cli("lineage", "sft-v1", registry=reg, check=True).stdout
    assert "continued sft-v2" in tree and "stacked dpo-v1" in tree and "trained on tiny" in tree
    lineage = _json(run_cli("lineage", "dpo", "--json", "--no-bases", registry=reg))
    assert [(e["child"], e["parent"], e["relation"]) for e in lineage["ancestors"]] == [
        ("dpo-v1", "sft-v2", "stacked"), ("sft-v2", "sft-v1", "continued")]
    assert "base of sft-v1" in run_cli("lineage", "tiny", registry=reg, check=True).stdout

    run_cli("tag", "sft-v1", "prod", registry=reg, check=True)
    assert _json(run_cli("show", "sft@prod", "--json", registry=reg))["ref"] == "sft-v1"
    run_cli("untag", "sft-v1", "prod", registry=reg, check=True)

    refused = run_cli("rm", "sft-v1", registry=reg)
    assert refused.returncode == 2 and "--force" in refused.stderr
    run_cli("rm", "sft-v1", "--force", registry=reg, check=True)
    assert not (reg / "adapters" / "sft" / "v1").exists()
    assert _json(run_cli("show", "sft-v2", "--json", registry=reg))["parents"] == []


def test_ls_pages_and_filters(cli_registry, lora_dirs):
    for _ in range(3):
        run_cli("import", str(lora_dirs["good"]), "--base", "tiny", "--name", "a", registry=cli_registry,
                check=True)
    page = run_cli("ls", "--limit", "2", registry=cli_registry, check=True)
    assert "a-v3" in page.stdout and "a-v1" not in page.stdout
    assert "1 more not shown" in page.stderr
    assert len(_json(run_cli("ls", "--json", "--limit", "0", registry=cli_registry))) == 3
    assert _json(run_cli("ls", "--json", "--stage", "sft", registry=cli_registry)) == []
    assert len(_json(run_cli("ls", "--json", "--base", "tiny", registry=cli_registry))) == 3


def test_base_ls_json(cli_registry, tiny_base_dir):
    (base,) = _json(run_cli("base", "ls", "--json", registry=cli_registry))
    assert base["name"] == "tiny" and base["source"] == str(tiny_base_dir.resolve())
    assert base["path"] == str(tiny_base_dir.resolve()) and len(base["config_sha256"]) == 64
    assert {"revision", "num_parameters", "dtype", "architecture"} <= set(base)


def test_plugins_json():
    listed = _json(run_cli("plugins", "--json"))
    stages = {s for p in listed for s in p["stages"]}
    assert {"sft", "dpo", "resume", "merge"} <= stages
    assert all({"name", "stages"} <= set(p) for p in listed)


def test_doctor_and_gc_on_a_healthy_registry(cli_registry, lora_dirs):
    run_cli("import", str(lora_dirs["good"]), "--base", "tiny", registry=cli_registry, check=True)
    doctor = run_cli("doctor", "--json", registry=cli_registry)
    report = _json(doctor)
    assert report["registry"]["checked"] == 2 and report["registry"]["problems"] == []
    assert "torch" in report["libraries"] and "torch" not in report  # not imported unless asked
    gc = run_cli("gc", registry=cli_registry, check=True)
    assert gc.stdout == "" and "nothing to remove" in gc.stderr


def test_init_in_a_named_directory(tmp_path):
    run_cli("init", str(tmp_path / "elsewhere"), check=True)
    assert (tmp_path / "elsewhere" / "adaptr.db").is_file()
    again = run_cli("init", str(tmp_path / "elsewhere"), check=True)
    assert "already exists" in again.stderr


def test_no_registry_found(tmp_path):
    proc = run_cli("ls", cwd=tmp_path, env={"ADAPTR_REGISTRY": ""})
    assert proc.returncode == 2 and "adaptr init" in proc.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "adaptr.db").write_text("not sqlite")
    proc = run_cli("ls", registry=tmp_path / "junk")
    assert proc.returncode == 2 and "is not an adaptr registry" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- bad input: exit 2, one line with a hint, and the registry byte-for-byte unchanged -------


@pytest.fixture(scope="module")
def populated_template(tmp_path_factory, tiny_base_dir, lora_dirs):
    root = tmp_path_factory.mktemp("template") / "registry"
    run_cli("init", str(root), check=True)
    run_cli("base", "add", "tiny", "--from", str(tiny_base_dir), registry=root, check=True)
    run_cli("import", str(lora_dirs["good"]), "--base", "tiny", "--name", "sft", registry=root, check=True)
    run_cli("base", "add", "tiny2", "--from", str(tiny_base_dir), registry=root, check=True)
    return root


@pytest.fixture
def populated(populated_template, tmp_path):
    """A registry with base `tiny` and `sft-v1` (a copy of one made once per module)."""
    return shutil.copytree(populated_template, tmp_path / "registry")


BAD_INPUTS = {
    "unknown ref (show)": ["show", "nope-v1"],
    "unknown ref (lineage)": ["lineage", "nope"],
    "unknown version": ["show", "sft-v9"],
    "unknown alias": ["show", "sft@prod"],
    "unknown ref (tag)": ["tag", "nope-v1", "prod"],
    "unknown ref (rm)": ["rm", "nope-v1"],
    "untag an absent alias": ["untag", "sft-v1", "prod"],
    "bad ref name": ["show", "../x"],
    "bad base name": ["base", "add", "../x", "--from", "{tiny}"],
    "bad adapter name": ["import", "{good}", "--base", "tiny", "--name", "../x"],
    "versioned adapter name": ["import", "{good}", "--base", "tiny", "--name", "x-v2"],
    "bad alias": ["tag", "sft-v1", "../x"],
    "duplicate base": ["base", "add", "tiny", "--from", "{tiny}"],
    "base path missing": ["base", "add", "other", "--from", "/no/such/dir"],
    "unknown base": ["import", "{good}", "--base", "nope"],
    "unknown base (ls)": ["ls", "--base", "nope"],
    "not a PEFT dir": ["import", "{tiny}", "--base", "tiny"],
    "missing dir": ["import", "/no/such/adapter", "--base", "tiny"],
    "pickled only": ["import", "{pickled}", "--base", "tiny"],
    "shapes do not fit": ["import", "{shapes}", "--base", "tiny"],
    "rank differs from config": ["import", "{rank}", "--base", "tiny"],
    "not LoRA": ["import", "{ia3}", "--base", "tiny"],
    "config not JSON": ["import", "{badjson}", "--base", "tiny"],
    "no weights file": ["import", "{nolora}", "--base", "tiny"],
    "unknown parent": ["import", "{good}", "--base", "tiny", "--parent", "nope-v1"],
    "relation without parent": ["import", "{good}", "--base", "tiny", "--relation", "merged"],
    "rm with children": ["rm", "sft-v1"],
    "parent on another base": ["import", "{good}", "--base", "tiny2", "--parent", "sft-v1"],
}
EXPECTED_WORDS = {
    "pickled only": "pickled weights are not accepted",
    "shapes do not fit": "expected",
    "not LoRA": "LoRA only",
    "duplicate base": "already exists",
    "rank differs from config": "r=16",
    "parent on another base": "shares its parent's base",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_changes_nothing(case, populated, lora_dirs, tiny_base_dir):
    if case == "rm with children":
        run_cli("import", str(lora_dirs["good"]), "--base", "tiny", "--name", "kid", "--parent", "sft-v1",
                registry=populated, check=True)
    paths = {k: str(v) for k, v in lora_dirs.items()} | {"tiny": str(tiny_base_dir)}
    args = [a.format(**paths) for a in BAD_INPUTS[case]]
    before = dump_registry(populated)
    proc = run_cli(*args, registry=populated)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "hint" in lines[0], proc.stderr
    assert EXPECTED_WORDS.get(case, "") in lines[0]
    assert proc.stdout == ""
    assert dump_registry(populated) == before
    print(f"{case}: {lines[0]}")


def test_manifest_that_does_not_verify(populated):
    weights = populated / "adapters" / "sft" / "v1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    before = dump_registry(populated)
    proc = run_cli("doctor", registry=populated)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "failed verification" in lines[0] and "hint" in lines[0]
    assert "sha256" in proc.stdout and "sft-v1" in proc.stdout
    assert dump_registry(populated) == before
