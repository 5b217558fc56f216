"""A registry made by adaptr 0.1.0 (the release before the record schema, format 1) opens with
this code: migrated in place, every record upgraded, every --json field of 0.1.0 still there.

``tests/fixtures/registry-0.1.0.tar.gz`` was made by 0.1.0 itself (commit a9e3593): `adaptr demo`
(sft -> dpo -> merge into a derived base) plus a weighted merge `mix`, and the `--json` output of
its listing commands in ``rel/json-0.1.0/``.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from adaptr import records
from conftest import run_cli

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "registry-0.1.0.tar.gz"
OLD_ROOT = "/tmp/relreg/rel"  # where 0.1.0 made it


@pytest.fixture
def old_registry(tmp_path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    here = tmp_path / "rel"
    # The base `tiny` was registered from a directory beside the registry, by absolute path: the
    # user moved both together, and points the base at its new place.
    db = sqlite3.connect(here / "registry" / "adaptr.db")
    with db:
        db.execute("UPDATE bases SET path = ?, source = ? WHERE name = 'tiny'", [str(here / "tiny-llama")] * 2)
    db.close()
    return here


def _json(*args, registry: Path):
    return json.loads(run_cli(*args, "--json", registry=registry, check=True).stdout)


def _paths(value, prefix=()) -> set[tuple]:
    """Every key path of a JSON value (list items by their first element's shape)."""
    out = set()
    if isinstance(value, dict):
        for key, item in value.items():
            out.add((*prefix, key))
            out |= _paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        out |= _paths(value[0], (*prefix, "[]"))
    return out


COMMANDS = {"ls": ("ls",), "show_sft-v1": ("show", "sft-v1"), "show_dpo-v1": ("show", "dpo-v1"),
            "show_mix-v1": ("show", "mix-v1"), "base_ls": ("base", "ls"), "lineage_dpo-v1": ("lineage", "dpo-v1"),
            "runs": ("runs",)}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_json_field_of_0_1_0_is_still_there(old_registry, name):
    old = json.loads((old_registry / "json-0.1.0" / f"{name}.json").read_text())
    new = _json(*COMMANDS[name], registry=old_registry / "registry")
    old_paths, new_paths = _paths(old), _paths(new)
    if name == "show_mix-v1":
        # a weighted merge's record moved into the schema (checked field by field below)
        old_paths = {p for p in old_paths if p[:1] != ("record",)}
    assert sorted(old_paths - new_paths) == []


def test_records_are_upgraded_to_the_declared_schema(old_registry):
    root = old_registry / "registry"
    old_mix = json.loads((old_registry / "json-0.1.0" / "show_mix-v1.json").read_text())["record"]
    mix = _json("show", "mix-v1", registry=root)["record"]
    assert mix["format"] == records.FORMAT and mix["producer"] == "weighted-merge"
    assert mix["libraries"] == old_mix["library_versions"]  # the drift check reads `libraries`
    assert mix["merge"]["method"] == "linear" and mix["merge"]["weights"] == [0.5, 0.5]
    assert mix["merge"]["parents"] == ["sft-v1", "dpo-v1"]

    old_sft = json.loads((old_registry / "json-0.1.0" / "show_sft-v1.json").read_text())["record"]
    sft = _json("show", "sft-v1", registry=root)["record"]
    assert sft["format"] == records.FORMAT and sft["producer"] == "training"
    for key, value in old_sft.items():  # a training record keeps every value it had (fields may be added)
        if isinstance(value, dict):
            assert {k: sft[key].get(k) for k in value} == value, key
        else:
            assert sft[key] == value, key

    derived = _json("show", "dpo-v1-merged", registry=root)
    assert derived["record"]["format"] == records.FORMAT
    assert derived["record"]["merge"]["chain"] == ["dpo-v1"]
    assert derived["record"]["merge"]["dtype"] == "fp32"


def test_the_migrated_registry_verifies_and_trains_on(old_registry):
    root = old_registry / "registry"
    doctor = run_cli("doctor", registry=root)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    db = sqlite3.connect(root / "adaptr.db")
    stored = dict(db.execute("SELECT name, record FROM adapters").fetchall())
    db.close()
    assert all(json.loads(text)["format"] == records.FORMAT for text in stored.values())
    # a dry run of a stage on a migrated version reads its record (drift check) and plans
    data = Path(__file__).resolve().parents[1] / "adaptr" / "data" / "preferences.jsonl"
    proc = run_cli("train", "dpo", "--from", "mix-v1", "--data", str(data), "--dry-run", "--json", registry=root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parent"] == "mix-v1"
    # opening again changes nothing: the migration ran once
    db = sqlite3.connect(root / "adaptr.db")
    assert dict(db.execute("SELECT name, record FROM adapters").fetchall()) == stored
    db.close()
