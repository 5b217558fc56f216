"""Fail before work: every bad input to `adaptr train` is refused before a run is recorded.

Each case runs the real command (without --dry-run: it would train if the check let it through)
and then checks: exit 2, one line on stderr with a hint and the expected words, no run row, no
run directory, and the registry (rows and files) byte for byte as before.
"""

from __future__ import annotations

import pytest
from conftest import run_cli

from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

from .test_verify_before_use import assert_refused, snapshot

SFT, PREFS = str(data_file(SFT_DATA)), str(data_file(PREFERENCE_DATA))
TRAIN = ["train", "sft", "--base", "tiny", "--data", SFT]

# case: (extra arguments, expected words); "{dir}" is a scratch directory for input files.
BAD_SETTINGS = {
    "invalid name": (["--name", "a b"], "invalid adapter name 'a b'"),
    "name ending like a version": (["--name", "x-v2"], "ends like a version"),
    "name with a newline": (["--name", "sft\n"], "invalid adapter name"),
    "negative learning rate": (["--learning-rate", "-1"], "learning_rate=-1.0 is out of range: it must be > 0"),
    "zero learning rate": (["--set", "learning_rate=0"], "must be > 0"),
    "NaN learning rate": (["--learning-rate", "nan"], "learning_rate=nan is not a finite number"),
    "infinite learning rate": (["--set", "learning_rate=inf"], "not a finite number"),
    "zero batch size": (["--per-device-train-batch-size", "0"], "must be >= 1"),
    "zero rank": (["--r", "0"], "r=0 is out of range"),
    "negative alpha": (["--lora-alpha", "-16"], "lora_alpha=-16 is out of range"),
    "dropout of 1": (["--lora-dropout", "1"], "must be < 1"),
    "zero max steps": (["--max-steps", "0"], "must be >= 1 (or -1)"),
    "negative seed": (["--seed", "-3"], "seed=-3 is out of range"),
    "unknown bias": (["--bias", "some"], "bias='some' is not one of none, all, lora_only"),
    "rank not a number": (["--set", "r=eight"], "r='eight' is not a valid whole number"),
    "unknown key": (["--set", "lerning_rate=1e-4"], "did you mean 'learning_rate'?"),
    "set without =": (["--set", "learning_rate"], "is not key=value"),
    "eval fraction above 1": (["--eval-fraction", "1.5"], "--eval-fraction 1.5 is not a fraction"),
    "NaN eval fraction": (["--eval-fraction", "nan"], "is not a fraction"),
    "negative save steps": (["--save-steps", "-2"], "--save-steps -2 is not a number of steps"),
    "unknown option": (["--lerning-rate", "1"], "No such option '--lerning-rate'"),
    "mode without --from": (["--mode", "stack"], "--mode stack needs --from REF"),
    "unknown base": (["--base", "nope"], "unknown base 'nope'"),
    "data file missing": (["--data", "/no/such.jsonl"], "not found"),
    "data not UTF-8": (["--data", "{dir}/bad-utf8.jsonl"], "line 2 is not valid UTF-8"),
    "data not JSON": (["--data", "{dir}/bad-json.jsonl"], "line 2 is not valid JSON"),
    "data of the wrong format": (["--data", PREFS], "row"),
    "YAML not UTF-8": (["--config", "{dir}/bad-utf8.yaml"], "line 2 is not valid UTF-8"),
    "YAML not a mapping": (["--config", "{dir}/list.yaml"], "must hold a mapping"),
    "YAML wrong type": (["--config", "{dir}/wrong-type.yaml"], "r=[8] is not a valid whole number"),
    "YAML text for a number": (["--config", "{dir}/text-rate.yaml"], "learning_rate='fast' is not a valid number"),
    "YAML name not text": (["--config", "{dir}/name-number.yaml"], "name must be text"),
    "YAML unknown key": (["--config", "{dir}/unknown.yaml"], "unknown config key 'rank'"),
}

FILES = {
    "bad-utf8.jsonl": b'{"text": "fine"}\n{"text": "\xff\xfe"}\n',
    "bad-json.jsonl": b'{"text": "fine"}\n{"text": \n',
    "bad-utf8.yaml": b"r: 8\nname: \"\xff\"\n",
    "list.yaml": b"- r\n- 8\n",
    "wrong-type.yaml": b"r: [8]\n",
    "text-rate.yaml": b"learning_rate: fast\n",
    "name-number.yaml": b"name: 5\n",
    "unknown.yaml": b"rank: 8\n",
}


def assert_nothing_recorded(reg_dir, before) -> None:
    from adaptr import Registry

    with Registry(reg_dir / "adaptr.db") as registry:
        runs = registry.query("SELECT id FROM runs")
    assert len(runs) == 2  # the template's own two training runs
    assert sorted(p.name for p in (reg_dir / "runs").iterdir()) == sorted(r["id"] for r in runs)
    assert snapshot(reg_dir) == before


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_training_input_is_refused_before_anything_is_recorded(case, reg_dir, tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    extra, words = BAD_SETTINGS[case]
    args = [a.replace("{dir}", str(tmp_path)) for a in TRAIN + extra]
    before = snapshot(reg_dir)
    line = assert_refused(run_cli(*args, registry=reg_dir), words)
    assert_nothing_recorded(reg_dir, before)
    print(f"{case}: {line}")


@pytest.mark.parametrize("how", ["a file", "a dangling link"])
def test_a_registry_whose_tmp_cannot_be_written_refuses_before_training(how, reg_dir):
    tmp = reg_dir / "tmp"
    if tmp.exists():
        tmp.rmdir()
    if how == "a file":
        tmp.write_text("")
    else:
        tmp.symlink_to(reg_dir / "no" / "such" / "dir")
    before = snapshot(reg_dir)
    assert_refused(run_cli(*TRAIN, registry=reg_dir), f"cannot write into {tmp}")
    assert_nothing_recorded(reg_dir, before)


def test_dry_run_checks_everything_and_writes_nothing(reg_dir):
    before = snapshot(reg_dir)
    ok = run_cli("train", "dpo", "--from", "st-v1", "--data", PREFS, "--dry-run", "--json", registry=reg_dir)
    assert ok.returncode == 0, ok.stderr
    import json

    plan = json.loads(ok.stdout)
    assert plan["parent"] == "st-v1" and plan["inputs"] == ["sft-v1", "st-v1", "tiny"]
    assert_nothing_recorded(reg_dir, before)
