"""`adaptr train` through the real console script: options, layering, and refusals that write nothing."""

from __future__ import annotations

import json

import pytest

from conftest import dump_registry, run_cli


def _flags(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def test_train_sft_then_dpo_from_the_cli(registry_with_base, sft_data, dpo_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 2\nlogging_steps: 1\nlearning_rate: 0.001\nr: 4\n")
    proc = run_cli("train", "sft", "--base", "tiny", "--data", str(sft_data), "--config", str(recipe),
                   "--max-steps", "3", "--set", "lora_alpha=8", "--max-length", "64",
                   registry=registry_with_base)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sft-v1"
    assert "max_steps: 3" in proc.stderr  # the effective config is printed on stderr
    version = registry_with_base.resolve("sft-v1")
    assert (version["config"]["max_steps"], version["config"]["r"], version["config"]["lora_alpha"]) == (3, 4, 8)
    assert version["config"]["learning_rate"] == 0.001  # from the YAML file
    proc = run_cli("train", "dpo", "--from", "sft-v1", "--data", str(dpo_data), "--max-steps", "2",
                   "--max-length", "64", "--json", registry=registry_with_base)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["status"] == "succeeded" and run["output_ref"] == "dpo-v1"
    assert registry_with_base.resolve("dpo-v1")["config"]["r"] == 4  # inherited from sft-v1


def test_stage_options_come_from_the_config_dataclass():
    proc = run_cli("train", "dpo", "--help")
    assert proc.returncode == 0
    for option in ("--beta", "--learning-rate", "--per-device-train-batch-size", "--lora-alpha",
                   "--from", "--mode", "--save-steps", "--quantize"):
        assert option in proc.stdout


def _bad_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2 + [{"prompt": "p", "chosen": "c", "rejected": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


REFUSALS = {
    "conflicting LoRA settings": (["--from", "sft-v1", "--r", "4"], "--mode merge"),
    "malformed data": (["--from", "sft-v1", "--data", "{bad}"], "row 3: key 'rejected'"),
    "wrong base": (["--from", "sft-v1", "--base", "other"], "trained on base 'tiny', not 'other'"),
    "unknown key": (["--from", "sft-v1", "--set", "betta=0.2"], "did you mean 'beta'"),
    "QLoRA without CUDA": (["--from", "sft-v1", "--quantize", "4bit"], "needs a CUDA GPU"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_exit_2_and_leave_the_registry_unchanged(case, sft_registry, dpo_data, tmp_path,
                                                          tiny_base_dir):
    from adaptr.bases import add_local_base

    if case == "QLoRA without CUDA":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    add_local_base(sft_registry, "other", tiny_base_dir)
    args, expected = REFUSALS[case]
    args = [a.replace("{bad}", str(_bad_rows(tmp_path))) for a in args]
    if "--data" not in args:
        args += ["--data", str(dpo_data)]
    before = dump_registry(sft_registry.root)
    proc = run_cli("train", "dpo", *args, *_flags({"max_steps": 1}), registry=sft_registry)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert dump_registry(sft_registry.root) == before


def test_merge_mode_without_merge_support_is_refused(sft_registry, dpo_data, monkeypatch):
    import sys

    from adaptr import StageRequest
    from adaptr.errors import MachineError
    from adaptr.stages import prepare

    monkeypatch.setitem(sys.modules, "adaptr.hf.merge", None)  # import fails as if absent
    before = dump_registry(sft_registry.root)
    with pytest.raises(MachineError, match="--mode merge"):
        prepare(sft_registry, StageRequest(stage="dpo", parent="sft-v1", mode="merge", data=str(dpo_data)))
    assert dump_registry(sft_registry.root) == before

