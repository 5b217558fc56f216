"""The grpo stage: against plain TRL GRPOTrainer, from an SFT parent, its rewards, and refusals."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from adaptr import StageRequest, run_stage
from adaptr.demo import PROMPTS_DATA, data_file
from conftest import dump_registry, run_cli

from .conftest import FAST, first_logged

# A handful of generations per prompt, a few tokens each: seconds on a CPU.
FAST_GRPO = {**{k: v for k, v in FAST.items() if k != "max_length"}, "per_device_train_batch_size": 4,
             "num_generations": 2, "max_completion_length": 6, "learning_rate": 5e-3}

# Rewards a user would write: one reads the data's `answer` column, one scores the text itself
# (so the completions of a group differ and the gradient is not zero).
REWARDS = textwrap.dedent('''
    def answered(prompts, completions, answer, **kwargs):
        return [1.0 if a in c[0]["content"] else 0.0 for c, a in zip(completions, answer)]

    def letters(completions, completion_ids, **kwargs):
        return [sum(ch.isalpha() for ch in c[0]["content"]) / (1 + len(ids))
                for c, ids in zip(completions, completion_ids)]

    def one_score(completions, **kwargs):
        return [0.5]

    def broken(completions, **kwargs):
        raise KeyError("no column 'solution'")

    def words(completions, **kwargs):
        return ["good" for _ in completions]
''')


@pytest.fixture
def reward_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS)
    return path


@pytest.fixture(scope="session")
def prompts_data():
    return data_file(PROMPTS_DATA)


def _grpo(registry, data, **kwargs):
    config = {**FAST_GRPO, **kwargs.pop("config", {})}
    run = run_stage(registry, StageRequest(stage="grpo", data=str(data), config=config, **kwargs))
    assert run["status"] == "succeeded", run.get("error")
    return run, registry.resolve(run["output_ref"])


def _plain_trl_grpo(tmp_path, tiny_base_dir, parent_dir, data, reward_funcs, **settings):
    """What a TRL user writes: the SFT adapter loaded trainable, GRPOTrainer, the same settings
    (adaptr's optimizer default is adamw_torch; transformers' is the fused one)."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    set_seed(42)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir), str(parent_dir),
                                      is_trainable=True)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                      save_strategy="no", logging_first_step=True, dataloader_pin_memory=False,
                      activation_checkpointing=False, disable_tqdm=True, seed=42, optim="adamw_torch", **settings)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(tiny_base_dir))
    trainer.train()
    model.save_pretrained(str(tmp_path / "trl-adapter"), selected_adapters=["default"], save_embedding_layers=False)
    return trainer, tmp_path / "trl-adapter"


def _module(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("oracle_rewards", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpo_from_sft_is_plain_trl_grpotrainer(sft_registry, prompts_data, reward_file, tmp_path, tiny_base_dir):
    import torch
    from safetensors.torch import load_file

    rewards = [f"{reward_file}:answered", f"{reward_file}:letters=0.5"]
    run, child = _grpo(sft_registry, prompts_data, parent="sft-v1", config={"reward": rewards})
    assert child["parents"] == [{"ref": "sft-v1", "kind": "adapter", "relation": "continued",
                                 "params": {"mode": "continue"}}]  # beta 0: no reference policy
    record = child["record"]
    assert record["trainer"] == "trl.GRPOTrainer" and record["reference_policy"] is None
    described = record["extra"]["rewards"]
    assert [(r["function"], r["weight"]) for r in described] == [(f"{reward_file}:answered", 1.0),
                                                                  (f"{reward_file}:letters", 0.5)]
    assert described[0]["sha256"] and described[0]["source"] == str(reward_file)

    module = _module(reward_file)
    settings = {k: v for k, v in FAST_GRPO.items()}
    trainer, trl_dir = _plain_trl_grpo(tmp_path, tiny_base_dir, sft_registry.resolve("sft-v1")["path"],
                                       prompts_data, [module.answered, module.letters],
                                       reward_weights=[1.0, 0.5], **settings)
    ours = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    theirs = load_file(str(trl_dir / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # the same adapter, bit for bit
    parent = load_file(str(Path(sft_registry.resolve("sft-v1")["path"]) / "adapter_model.safetensors"))
    assert any(not torch.equal(parent[k], ours[k]) for k in ours)  # and it trained
    logged = {log["step"]: log for log in trainer.state.log_history if "reward" in log}
    for name in ("reward", "loss", "rewards/letters/mean"):
        recorded = {m["step"]: m["value"] for m in sft_registry.metrics(run["id"], name)}
        assert recorded == {step: pytest.approx(log[name], abs=1e-6) for step, log in logged.items()}, name


def test_grpo_with_beta_uses_the_parent_as_reference(sft_registry, prompts_data, reward_file):
    run, child = _grpo(sft_registry, prompts_data, parent="sft-v1", name="klgrpo",
                       config={"reward": [f"{reward_file}:letters", "repetition=0.2"], "beta": 0.05,
                               "max_steps": 2})
    assert child["parents"][0]["params"] == {"mode": "continue", "reference_policy": "sft-v1"}
    assert child["record"]["reference_policy"] == "sft-v1"
    assert first_logged(sft_registry, child["ref"])["kl"] == 0  # step 1: policy = reference = parent
    assert "ref" not in {p.name for p in Path(child["path"]).iterdir()}
    from safetensors.torch import load_file

    saved = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    assert child["record"]["parameters"]["trainable"] == sum(t.numel() for t in saved.values())


def test_grpo_builtin_rewards_on_a_new_adapter(registry_with_base, prompts_data):
    run, version = _grpo(registry_with_base, prompts_data, base="tiny",
                         config={"reward": ["regex", "length"], "reward_pattern": "[0-9]",
                                 "reward_target_length": 3, "r": 4})
    assert version["parents"] == [] and version["record"]["mode"] == "new"
    names = {m["name"] for m in registry_with_base.metrics(run["id"])}
    assert {"rewards/regex_reward/mean", "rewards/length_reward/mean"} <= names
    # length: 1 at 3 tokens, 0 at 6 (every completion runs to max_completion_length here)
    lengths = registry_with_base.metrics(run["id"], "completions/mean_length")
    scores = registry_with_base.metrics(run["id"], "rewards/length_reward/mean")
    for length, score in zip(lengths, scores):
        assert score["value"] == pytest.approx(max(0.0, 1 - abs(length["value"] - 3) / 3), abs=1e-6)


def _rows(tmp_path, name, rows) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PROMPT = [{"role": "user", "content": "What is 1 + 1?"}]
REFUSALS = {
    "no such module": (["--reward", "no_such_rewards:score"], "reward 'no_such_rewards:score': cannot import"),
    "no such function": (["--reward", "{rewards}:missing"], "has no 'missing'"),
    "raises": (["--reward", "{rewards}:broken"], "reward '{rewards}:broken' raised KeyError"),
    "wrong count": (["--reward", "{rewards}:one_score"], "returned 1 scores for 2 completions"),
    "not numbers": (["--reward", "{rewards}:words"], "returned a str score"),
    "bad weight": (["--reward", "length=heavy"], "weight 'heavy' is not a number"),
    "weights twice": (["--reward", "length=2", "--set", "reward_weights=1"], "both as NAME=WEIGHT and"),
    "weights count": (["--reward", "length", "--set", "reward_weights=1,2"], "2 weights for 1 reward"),
    "no reward": ([], "grpo needs at least one reward function"),
    "no prompts": (["--reward", "length", "--data", "{noprompt}"], "expected prompt"),
    "empty prompt": (["--reward", "length", "--data", "{emptyprompt}"], "row 2: key 'prompt' is an empty list"),
    "max_length": (["--reward", "length", "--set", "max_length=32"], "max_length"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_rewards_and_data_exit_2_in_check(case, sft_registry, prompts_data, reward_file, tmp_path):
    args, expected = REFUSALS[case]
    files = {"rewards": str(reward_file),
             "noprompt": str(_rows(tmp_path, "noprompt", [{"question": PROMPT}])),
             "emptyprompt": str(_rows(tmp_path, "emptyprompt", [{"prompt": PROMPT}, {"prompt": []}]))}
    args = [a.format(**files) for a in args]
    if "--data" not in args:
        args += ["--data", str(prompts_data)]
    before = dump_registry(sft_registry.root)
    proc = run_cli("train", "grpo", "--from", "sft-v1", *args, "--max-steps", "1", registry=sft_registry)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "hint:" in proc.stderr
    assert expected.format(**files) in proc.stderr, proc.stderr
    assert dump_registry(sft_registry.root) == before


def test_grpo_from_the_cli_with_repeated_rewards(sft_registry, prompts_data, reward_file):
    proc = run_cli("train", "grpo", "--from", "sft-v1", "--data", str(prompts_data),
                   "--reward", f"{reward_file}:letters=2", "--reward", "length", "--num-generations", "2",
                   "--max-completion-length", "4", "--per-device-train-batch-size", "4", "--max-steps", "2",
                   "--learning-rate", "5e-3",
                   registry=sft_registry)
    assert proc.returncode == 0, proc.stderr
    version = sft_registry.resolve(proc.stdout.strip())
    assert version["config"]["reward"] == [f"{reward_file}:letters=2", "length"]
    assert [r["weight"] for r in version["record"]["extra"]["rewards"]] == [2.0, 1.0]


def test_grpo_and_kto_are_train_commands():
    listing = run_cli("train", "--help", check=True).stdout
    assert "grpo" in listing and "kto" in listing
    grpo = run_cli("train", "grpo", "--help", check=True).stdout
    assert "--reward NAME[=WEIGHT]" in grpo and "(repeatable)" in grpo and "--num-generations" in grpo
    assert "--max-length" not in grpo  # GRPOConfig has none
    kto = run_cli("train", "kto", "--help", check=True).stdout
    assert "--desirable-weight" in kto and "--undesirable-weight" in kto


def test_grpo_stacked_on_the_parent_keeps_it_in_the_reference(sft_registry, prompts_data, reward_file):
    run, child = _grpo(sft_registry, prompts_data, parent="sft-v1", mode="stack", name="stackgrpo",
                       config={"reward": [f"{reward_file}:letters"], "beta": 0.05, "max_steps": 2, "r": 4,
                               "lora_alpha": 8})
    assert child["parents"][0]["relation"] == "stacked"
    assert child["parents"][0]["params"]["reference_policy"] == "sft-v1"
    # TRL's reference pass switches to its `ref` adapter; the frozen parent stays active under it,
    # so at step 1 the reference is the policy (base + sft-v1 + the new adapter at zero).
    assert first_logged(sft_registry, child["ref"])["kl"] == 0
    from safetensors.torch import load_file

    saved = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    assert all(min(t.shape) == 4 for t in saved.values())
