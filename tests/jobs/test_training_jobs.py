"""Jobs with the real SFT stage on the tiny CPU model: exact resume after SIGKILL, accelerate DDP."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest

from adaptr import StageRequest, jobs, run_stage
from adaptr.stages import CHECKPOINT_INFO

from conftest import run_cli

from .helpers import killed_after_checkpoint, losses, wait_until

pytestmark = pytest.mark.slow

LORA = {"r": 4, "lora_alpha": 8, "max_length": 48, "learning_rate": 1e-3, "logging_steps": 1}


@pytest.fixture
def sft_data(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f" It is {2 * i}."}
            for i in range(48)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_request(data: Path, save_steps: int | None = None, **config) -> StageRequest:
    return StageRequest(stage="sft", base="tiny", data=str(data), config={**LORA, **config},
                        save_steps=save_steps)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_sft_resumed_after_sigkill_matches_an_uninterrupted_run_bit_for_bit(
        registry_with_base, sft_data, monkeypatch, accumulation):
    registry = registry_with_base
    settings = {"max_steps": 20, "per_device_train_batch_size": 2 // accumulation,
                "gradient_accumulation_steps": accumulation}
    reference = run_stage(registry, sft_request(sft_data, save_steps=10, **settings))
    killed = killed_after_checkpoint(registry, sft_request(sft_data, save_steps=10, **settings), 10,
                                     monkeypatch)
    checkpoint = registry.checkpoints(killed["id"])[0]
    assert json.loads((Path(checkpoint["path"]) / "trainer_state.json").read_text())["global_step"] == 10
    assert json.loads((Path(checkpoint["path"]) / CHECKPOINT_INFO).read_text())["step"] == 10

    resumed = run_stage(registry, jobs.resume_request(registry, killed["id"]))  # `adaptr resume RUN`
    assert resumed["status"] == "succeeded" and resumed["resumed_from_step"] == 10
    expected = {step: loss for step, loss in losses(registry, reference["id"]).items() if step > 10}
    assert sorted(expected) == list(range(11, 21))
    assert losses(registry, resumed["id"]) == expected  # float equality: bit-identical
    version = registry.resolve(resumed["output_ref"])
    assert version["stage"] == "sft"
    assert version["record"]["resumed_from"]["text"] == f"resumed from checkpoint 10 of run {killed['id']}"


def test_accelerate_two_cpu_processes_killed_and_resumed_register_one_version(
        registry_with_base, sft_data, monkeypatch):
    import psutil

    registry = registry_with_base
    settings = {"max_steps": 4, "per_device_train_batch_size": 2}
    request = sft_request(sft_data, save_steps=2, **settings)
    with monkeypatch.context() as patched:
        patched.setattr(jobs, "submit", functools.partial(jobs.submit, executor="accelerate",
                                                          options={"processes": 2}))
        killed = killed_after_checkpoint(registry, request, 2, patched)
    names = {p.name for p in Path(registry.checkpoints(killed["id"])[0]["path"]).iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt"} <= names  # both ranks wrote theirs
    wait_until(lambda: not [p for p in psutil.process_iter(["cmdline"])
                            if killed["id"] in " ".join(p.info["cmdline"] or [])], what="ranks gone")

    proc = run_cli("resume", killed["id"], "--detach", registry=registry)  # as it ran: 2 processes
    assert proc.returncode == 0, proc.stderr
    resumed = jobs.wait(registry, proc.stdout.strip(), timeout=240)
    assert resumed["status"] == "succeeded", "\n".join(jobs.tail(resumed, 40))
    assert resumed["executor"] == "accelerate" and resumed["resumed_from_step"] == 2
    assert [a["ref"] for a in registry.adapters()] == ["sft-v1"]

    single = run_stage(registry, sft_request(sft_data, max_steps=4, per_device_train_batch_size=4))
    two = {**{s: v for s, v in losses(registry, killed["id"]).items() if s <= 2},
           **losses(registry, resumed["id"])}
    one = losses(registry, single["id"])
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    for step in one:
        assert math.isclose(two[step], one[step], rel_tol=0.02), (step, two[step], one[step])


REWARD = "def letters(completions, **kwargs):\n    return [sum(ch.isalpha() for ch in c[0]['content']) / 10.0 for c in completions]\n"


def _preference_request(stage: str, tmp_path: Path, save_steps: int | None = None) -> StageRequest:
    """grpo (a reward from a file, imported again by the resumed process) or kto, from the base."""
    from adaptr.demo import PROMPTS_DATA, UNPAIRED_DATA, data_file

    config = {"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 1, "learning_rate": 5e-3,
              "r": 4, "lora_alpha": 8}
    if stage == "grpo":
        reward = tmp_path / "resume_rewards.py"
        reward.write_text(REWARD)
        config.update(num_generations=2, max_completion_length=5, reward=[f"{reward}:letters"])
        data = data_file(PROMPTS_DATA)
    else:
        config.update(max_length=48)
        data = data_file(UNPAIRED_DATA)
    return StageRequest(stage=stage, base="tiny", data=str(data), config=config, save_steps=save_steps)


def _metric(registry, run_id: str, name: str) -> dict[int, float]:
    return {row["step"]: row["value"] for row in registry.metrics(run_id, name)}


@pytest.mark.parametrize("stage", ["grpo", "kto"])
def test_grpo_and_kto_resumed_after_sigkill_match_an_uninterrupted_run_bit_for_bit(
        registry_with_base, tmp_path, monkeypatch, stage):
    import torch
    from safetensors.torch import load_file

    registry = registry_with_base
    reference = run_stage(registry, _preference_request(stage, tmp_path, save_steps=3))
    assert reference["status"] == "succeeded", reference.get("error")
    killed = killed_after_checkpoint(registry, _preference_request(stage, tmp_path, save_steps=3), 3, monkeypatch)
    resumed = run_stage(registry, jobs.resume_request(registry, killed["id"]))  # `adaptr resume RUN`
    assert resumed["status"] == "succeeded" and resumed["resumed_from_step"] == 3, resumed.get("error")
    watched = ("loss", "reward") if stage == "grpo" else ("loss", "rewards/margins")
    for name in watched:
        expected = {s: v for s, v in _metric(registry, reference["id"], name).items() if s > 3}
        assert sorted(expected) == [4, 5, 6]
        assert _metric(registry, resumed["id"], name) == expected, name  # float equality
    ours = load_file(str(Path(registry.resolve(resumed["output_ref"])["path"]) / "adapter_model.safetensors"))
    theirs = load_file(str(Path(registry.resolve(reference["output_ref"])["path"]) / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    version = registry.resolve(resumed["output_ref"])
    assert version["stage"] == stage
    assert version["record"]["resumed_from"]["text"] == f"resumed from checkpoint 3 of run {killed['id']}"
