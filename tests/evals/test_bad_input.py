"""Bad eval input: one line naming the row or the function, exit code 2, nothing recorded."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import dump_registry, run_cli

from .conftest import counts, write_jsonl

pytestmark = pytest.mark.slow


def _refused(registry, *args, env=None) -> str:
    before = dump_registry(registry.root)
    proc = run_cli("eval", *args, registry=registry, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert dump_registry(registry.root) == before
    return lines[0]


def test_wrong_format_for_the_evaluator(eval_registry, heldout_prefs, tmp_path):
    line = _refused(eval_registry, "sft-v1", "--data", str(heldout_prefs), "--evaluator", "loss")
    assert "row 1 has keys ['chosen', 'prompt', 'rejected']" in line
    broken = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "", "rejected": "c"}])
    line = _refused(eval_registry, "sft-v1", "--data", str(broken))
    assert "row 2: key 'chosen' is an empty string" in line
    unknown = write_jsonl(tmp_path / "odd.jsonl", [{"question": "a"}])
    assert "is in no evaluator's format" in _refused(eval_registry, "sft-v1", "--data", str(unknown))
    assert "unknown config key 'betta'" in _refused(eval_registry, "sft-v1", "--data", str(heldout_prefs),
                                                    "--set", "betta=1")


def test_a_version_of_another_tokenizer(eval_registry, heldout_prefs, tiny_base_dir, tmp_path):
    other_dir = tmp_path / "other-model"
    shutil.copytree(tiny_base_dir, other_dir)
    config = json.loads((other_dir / "tokenizer_config.json").read_text())
    (other_dir / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    assert run_cli("base", "add", "other", "--from", str(other_dir), registry=eval_registry).returncode == 0
    proc = run_cli("import", eval_registry.resolve("sft-v1")["path"], "--base", "other", "--name", "alien",
                   registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    line = _refused(eval_registry, "sft-v1", "alien-v1", "--data", str(heldout_prefs))
    assert "alien-v1 is on base 'other'" in line and "tokenizer" in line
    line = _refused(eval_registry, "dpo-v1", "--data", str(heldout_prefs), "--set", "reference=other")
    assert "other is on base 'other'" in line


def test_scorers_that_cannot_run(eval_registry, heldout_prompts, tmp_path):
    (tmp_path / "myscorers.py").write_text(
        "def boom(output, row):\n    raise KeyError('answer')\n\n"
        "def picky(output, row):\n    if output != row['expected']:\n        raise ValueError('unexpected output')\n"
        "    return 1.0\n")
    env = {"PYTHONPATH": str(tmp_path)}
    line = _refused(eval_registry, "sft-v1", "--data", str(heldout_prompts), "--set", "scorer=myscorers:boom",
                    env=env)
    assert "scorer myscorers:boom raised on row 1: KeyError" in line
    assert "cannot import" in _refused(eval_registry, "sft-v1", "--data", str(heldout_prompts),
                                        "--set", "scorer=nosuchmodule:f")
    no_expected = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi", "expected": "hi"},
                                                          {"prompt": "Say bye"}])
    assert "row 2 has no 'expected' output" in _refused(eval_registry, "sft-v1", "--data", str(no_expected))
    # Raising only on what the model generates: found after generation, still nothing recorded.
    before = counts(eval_registry)
    proc = run_cli("eval", "sft-v1", "--data", str(heldout_prompts), "--set", "scorer=myscorers:picky",
                   "--set", "max_new_tokens=2", registry=eval_registry, env=env)
    assert proc.returncode == 2
    assert "scorer myscorers:picky raised on row 1: ValueError: unexpected output" in proc.stderr
    after = counts(eval_registry)
    assert {k: after[k] for k in ("evaluations", "eval_metrics", "eval_outputs")} == \
        {k: before[k] for k in ("evaluations", "eval_metrics", "eval_outputs")}
