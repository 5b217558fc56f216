"""Verify before use: a version or base whose files no longer match is refused by every command
that would read it, with the file named and a repair, and nothing is written."""

from __future__ import annotations

import os

import pytest
from conftest import dump_registry, run_cli

from adaptr import Registry
from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file
from adaptr.errors import IntegrityError

from .conftest import flip_byte, tree_listing

PREFS, SFT = str(data_file(PREFERENCE_DATA)), str(data_file(SFT_DATA))

# Commands that read sft-v1 (directly, or beneath st-v1 which is stacked on it).
READS_SFT = {
    "train --from (dry run)": ["train", "dpo", "--from", "sft-v1", "--data", PREFS, "--dry-run"],
    "train --from": ["train", "dpo", "--from", "sft-v1", "--data", PREFS, "--set", "max_steps=1"],
    "train --mode stack": ["train", "dpo", "--from", "sft-v1", "--mode", "stack", "--data", PREFS],
    "train --mode merge": ["train", "dpo", "--from", "sft-v1", "--mode", "merge", "--data", PREFS],
    "continue a child stacked on it": ["train", "sft", "--from", "st-v1", "--data", SFT],
    "detached train": ["train", "dpo", "--from", "sft-v1", "--data", PREFS, "--detach"],
    "merge --into-base": ["merge", "sft-v1", "--into-base"],
    "weighted merge": ["merge", "sft-v1", "imp-v1", "--method", "cat", "--name", "mix"],
    "export": ["export", "sft-v1", "{out}"],
    "export a child stacked on it": ["export", "st-v1", "{out}"],
    "export --merged": ["export", "st-v1", "{out}", "--merged"],
}


def snapshot(root) -> tuple:
    return dump_registry(root), [f for f in tree_listing(root) if not f[0].startswith("adaptr.db")]


def assert_refused(proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(READS_SFT))
def test_a_damaged_version_is_used_by_nothing(case, reg_dir, tmp_path):
    flip_byte(reg_dir / "adapters" / "sft" / "v1" / "adapter_model.safetensors")
    before = snapshot(reg_dir)
    args = [a.format(out=tmp_path / "out") for a in READS_SFT[case]]
    line = assert_refused(run_cli(*args, registry=reg_dir), "sft-v1 is damaged",
                          "adapter_model.safetensors does not match its sha256", "adaptr rm sft-v1")
    assert snapshot(reg_dir) == before and not (tmp_path / "out").exists()
    print(f"{case}: {line}")


def test_load_refuses_a_damaged_chain(reg_dir):
    import adaptr

    flip_byte(reg_dir / "adapters" / "sft" / "v1" / "adapter_config.json", offset=5)
    with pytest.raises(IntegrityError, match="sft-v1 is damaged: .*adapter_config.json"):
        adaptr.load("st-v1", registry=str(reg_dir))


def test_an_imported_version_says_where_to_import_it_from_again(reg_dir):
    (reg_dir / "adapters" / "imp" / "v1" / "adapter_model.safetensors").unlink()
    line = assert_refused(run_cli("export", "imp-v1", str(reg_dir.parent / "o"), registry=reg_dir),
                          "imp-v1 is damaged", "adapter_model.safetensors is missing")
    assert "import it again from" in line and "peft-lora" in line


@pytest.mark.parametrize("damage", ["same size", "truncated", "missing"])
def test_a_damaged_base_is_refused_and_doctor_finds_it(damage, reg_dir):
    shard = reg_dir / "models" / "tiny" / "model.safetensors"
    if damage == "same size":
        flip_byte(shard, offset=len(shard.read_bytes()) // 2)
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        shard.unlink()
    before = snapshot(reg_dir)
    expected = {"same size": "changed since it was registered", "truncated": "bytes",
                "missing": "is missing"}[damage]
    for args in (["train", "sft", "--base", "tiny", "--data", SFT, "--dry-run"],
                 ["merge", "sft-v1", "--into-base"]):
        assert_refused(run_cli(*args, registry=reg_dir), "base 'tiny': model.safetensors", expected)
    doctor = run_cli("doctor", registry=reg_dir)
    assert_refused(doctor, "1 artifact(s) failed verification")
    assert "model.safetensors" in doctor.stdout
    assert snapshot(reg_dir) == before


def test_stat_check_trusts_unchanged_mtimes_but_doctor_rehashes(reg_dir):
    """Everyday use re-hashes a base file only when its size or mtime changed (a 7B base would
    cost seconds per command otherwise); `adaptr doctor` re-hashes every file."""
    shard = reg_dir / "models" / "tiny" / "model.safetensors"
    stat = shard.stat()
    flip_byte(shard, offset=len(shard.read_bytes()) // 2)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # damage that hides its mtime
    ok = run_cli("train", "sft", "--base", "tiny", "--data", SFT, "--dry-run", registry=reg_dir)
    assert ok.returncode == 0, ok.stderr
    assert_refused(run_cli("doctor", registry=reg_dir), "failed verification")


def test_a_touched_but_unchanged_base_file_is_rehashed_once(reg_dir):
    shard = reg_dir / "models" / "tiny" / "model.safetensors"
    os.utime(shard)  # new mtime, same bytes: re-hashed, found intact, new mtime recorded
    for _ in range(2):
        ok = run_cli("train", "sft", "--base", "tiny", "--data", SFT, "--dry-run", registry=reg_dir)
        assert ok.returncode == 0, ok.stderr
    with Registry(reg_dir / "adaptr.db") as registry:
        recorded = registry.query("SELECT mtime_ns FROM base_files WHERE path = 'model.safetensors'")
    assert recorded == [{"mtime_ns": shard.stat().st_mtime_ns}]


def test_a_cut_stack_is_refused(reg_dir):
    """A registry damaged by an older adaptr (`rm --force` cut the edge): the child would load
    without its layer; its record says what it was trained on, so it is refused instead."""
    with Registry(reg_dir / "adaptr.db") as registry:
        with registry.write():
            registry.conn.execute("DELETE FROM edges WHERE relation = 'stacked'")
    assert_refused(run_cli("export", "st-v1", str(reg_dir.parent / "o"), registry=reg_dir),
                   "st-v1 was trained stacked on sft-v1", "no longer beneath it")


def test_import_refuses_a_truncated_safetensors_file(reg_dir, tmp_path):
    from lora_dirs import make_lora_dir

    cut = make_lora_dir(reg_dir / "models" / "tiny", tmp_path / "cut")
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # the header is whole; the data is not
    before = snapshot(reg_dir)
    assert_refused(run_cli("import", str(cut), "--base", "tiny", "--name", "cut", registry=reg_dir),
                   "is not a readable safetensors file", "the file holds")
    assert snapshot(reg_dir) == before

