"""The sft stage: a new adapter from a base, what it records, checkpoints, cancel, continue."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from adaptr import StageRequest, run_stage, store
from adaptr.stages import LogReporter

from .conftest import FAST_SFT, logits


def test_sft_version_loads_with_plain_peft_and_changes_outputs(sft_registry, tiny_base_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    version = sft_registry.resolve("sft-v1")
    files = sorted(p.name for p in Path(version["path"]).iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    before = logits(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir), version["path"])
    assert not torch.allclose(before, logits(model))


def test_sft_records_everything(sft_registry, sft_data):
    version = sft_registry.resolve("sft-v1")
    record = version["record"]
    assert version["config"]["r"] == 8 and version["config"]["max_steps"] == 3
    assert record["data"]["sha256"] == store.sha256_file(sft_data)
    assert record["data"]["rows"] == sum(1 for line in open(sft_data) if line.strip())
    assert record["seed"] == 42 and record["mode"] == "new"
    assert {"torch", "transformers", "peft", "trl", "adaptr"} <= set(record["libraries"])
    assert 0 < record["parameters"]["trainable"] < record["parameters"]["total"]
    assert record["memory"]["cpu_peak_rss_bytes"] > 0
    assert record["speed"]["tokens_per_second"] > 0
    assert record["base"]["config_sha256"] and record["base"]["weights_fingerprint"]
    checks = record["checks"]
    assert checks["base_weights_unchanged"] and checks["changed_tensors"] > 0
    assert checks["lora_tensors"] == 2 * 7 * 2  # A and B for 7 linear modules in each of 2 layers
    loss_curve = sft_registry.metrics(version["run_id"], "loss")
    assert [m["step"] for m in loss_curve] == [1, 2, 3]
    assert "train_loss" in version["metrics"]


def test_checkpoints_are_complete_sealed_and_registered(registry_with_base, sft_data):
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data), config={**FAST_SFT, "max_steps": 4},
                           save_steps=2)
    run = run_stage(registry_with_base, request)
    checkpoints = registry_with_base.checkpoints(run["id"])
    assert [c["step"] for c in checkpoints] == [4, 2]
    for checkpoint in checkpoints:
        path = Path(checkpoint["path"])
        assert store.verify(path, checkpoint["sha256"]) == checkpoint["sha256"]
        names = {p.name for p in path.iterdir()}
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "trainer_state.json", store.MANIFEST} <= names
    assert not list((Path(run["run_dir"]) / "trainer").glob("checkpoint-*"))  # all moved


class StopAtStep(LogReporter):
    """Sends this process SIGTERM (what `adaptr cancel` does) once training reaches ``step``."""

    def __init__(self, step):
        self.step = step

    def update(self, step, metrics):
        if step == self.step and not metrics:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_cancels_without_publishing(registry_with_base, sft_data):
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data), config={**FAST_SFT, "max_steps": 50})
    run = run_stage(registry_with_base, request, reporter=StopAtStep(2))
    assert run["status"] == "cancelled"
    assert registry_with_base.adapters() == []
    steps = [c["step"] for c in registry_with_base.checkpoints(run["id"])]
    assert steps == [3]  # the step after the signal, saved whole


def test_sft_continue_keeps_the_parents_lora_settings(sft_registry, sft_data):
    run = run_stage(sft_registry, StageRequest(stage="sft", parent="sft-v1", data=str(sft_data),
                                               config={"max_steps": 2, "learning_rate": 1e-3}))
    child = sft_registry.resolve(run["output_ref"])
    assert child["ref"] == "sft-v2"
    assert child["config"]["r"] == 8 and child["config"]["lora_alpha"] == 16  # inherited
    assert child["parents"] == [{"ref": "sft-v1", "kind": "adapter", "relation": "continued",
                                 "params": {"mode": "continue"}}]


def test_eval_fraction_records_eval_metrics(registry_with_base, sft_data):
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data), config=FAST_SFT,
                           eval_fraction=0.25)
    run = run_stage(registry_with_base, request)
    version = registry_with_base.resolve(run["output_ref"])
    assert version["metrics"]["eval_loss"] > 0
    assert version["record"]["eval_data"]["rows"] == 18
    assert version["record"]["data"]["train_rows"] == 54
    assert registry_with_base.metrics(run["id"], "eval_loss")


@pytest.mark.parametrize("config", [{"lr_scheduler_type": "cosine", "warmup_steps": 1},
                                    {"target_modules": ["q_proj", "v_proj"], "r": 4}])
def test_sft_options_reach_the_trainer(registry_with_base, sft_data, config):
    run = run_stage(registry_with_base, StageRequest(stage="sft", base="tiny", data=str(sft_data),
                                                     config={**FAST_SFT, **config}))
    version = registry_with_base.resolve(run["output_ref"])
    if "target_modules" in config:
        assert version["record"]["checks"]["lora_tensors"] == 2 * 2 * 2
