"""`adaptr adopt`: a run started with plain TRL, taken in and continued by `adaptr resume`, gives
the losses plain TRL's own resume_from_checkpoint gives; bad output_dirs are refused up front."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dump_registry, run_cli

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY, INTERRUPTED_AT = 6, 2, 4
# What the user's TRL script set; adopt reads the LoRA settings, max_steps, logging_steps, the
# batch size and the learning rate from the checkpoints, and is told the rest.
PLAIN_TRL = """
import json, sys
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

base, data, out, resume = sys.argv[1:5]
args = SFTConfig(output_dir=out, max_steps=%(steps)d, per_device_train_batch_size=2, learning_rate=1e-3,
                 logging_steps=1, save_strategy="steps", save_steps=%(save)d, max_length=48, report_to=[],
                 use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True)
lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, peft_config=lora,
                     train_dataset=load_dataset("json", data_files=data, split="train"),
                     processing_class=AutoTokenizer.from_pretrained(base))
trainer.train(resume_from_checkpoint=resume or None)
print(json.dumps({e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}))
""" % {"steps": STEPS, "save": SAVE_EVERY}
# The settings the checkpoints do not record, as the script had them (TRL's and adaptr's
# defaults differ for these).
TOLD = ["--set", "max_length=48", "--set", "lora_dropout=0.1"]


def _plain_trl(base_dir: Path, data: Path, output_dir: Path, resume: Path | None = None) -> dict[int, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_TRL, str(base_dir), str(data), str(output_dir),
                           str(resume or "")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {int(step): loss for step, loss in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="module")
def plain_run(tiny_base_dir, tmp_path_factory):
    """A plain TRL SFT run of 6 steps checkpointed every 2, and its output_dir as it was when the
    run stopped after checkpoint 4 (the checkpoint at 6 never written)."""
    root = tmp_path_factory.mktemp("plain")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?",
                                        "completion": f" It is {2 * i}."}) + "\n" for i in range(24)))
    _plain_trl(tiny_base_dir, data, root / "full")
    stopped = root / "stopped"
    for step in range(SAVE_EVERY, INTERRUPTED_AT + 1, SAVE_EVERY):
        shutil.copytree(root / "full" / f"checkpoint-{step}", stopped / f"checkpoint-{step}")
    return {"data": data, "output_dir": stopped, "root": root}


def test_adopt_then_resume_gives_the_losses_of_trls_own_resume(plain_run, registry_with_base, tiny_base_dir):
    reg = registry_with_base
    output_dir, data = plain_run["output_dir"], plain_run["data"]
    trl_resumed = _plain_trl(tiny_base_dir, data, plain_run["root"] / "trl-resume",
                             resume=output_dir / f"checkpoint-{INTERRUPTED_AT}")
    expected = {step: loss for step, loss in trl_resumed.items() if step > INTERRUPTED_AT}
    assert sorted(expected) == list(range(INTERRUPTED_AT + 1, STEPS + 1))

    adopted = run_cli("adopt", str(output_dir), "--base", "tiny", "--stage", "sft", "--data", str(data),
                      "--name", "chat", *TOLD, "--json", registry=reg)
    assert adopted.returncode == 0, adopted.stderr
    run = json.loads(adopted.stdout)
    assert run["status"] == "interrupted" and run["checkpoints"] == [2, 4]
    assert f"adaptr resume {run['run']}" in adopted.stderr
    recorded = reg.run(run["run"])
    assert recorded["config"]["r"] == 4 and recorded["config"]["learning_rate"] == 1e-3  # from the checkpoint
    assert recorded["config"]["target_modules"] == ["q_proj", "v_proj"]

    resumed = run_cli("resume", run["run"], registry=reg)
    assert resumed.returncode == 0, resumed.stderr
    resumed_run = reg.run(resumed.stdout.strip().splitlines()[-1])
    assert resumed_run["status"] == "succeeded" and resumed_run["resumed_from_step"] == INTERRUPTED_AT
    losses = {m["step"]: m["value"] for m in reg.metrics(resumed_run["id"], "loss")}
    assert losses == expected  # float equality: the same computation as TRL's own resume
    version = reg.resolve("chat-v1")
    # The record's curve is the whole run: the plain TRL steps, then the resumed ones.
    assert [step for step, _ in version.record.loss_curve] == list(range(1, STEPS + 1))


def _refused(reg, output_dir: Path, data: Path, *args: str, base: str = "tiny"):
    before = dump_registry(reg.root)
    proc = run_cli("adopt", str(output_dir), "--base", base, "--data", str(data), *TOLD, *args, registry=reg)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], proc.stderr
    assert dump_registry(reg.root) == before  # nothing written
    return lines[0]


def _damaged_copy(plain_run, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(plain_run["output_dir"], copy)
    damage(copy / f"checkpoint-{INTERRUPTED_AT}")
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_bad_output_dirs_are_refused_before_anything_is_written(plain_run, registry_with_base, tmp_path):
    from adaptr.bases import add_local_base
    from adaptr.hf.tiny import make_tiny_base

    reg, data = registry_with_base, plain_run["data"]
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint-N folder" in _refused(reg, tmp_path / "empty", data)

    line = _refused(reg, _damaged_copy(plain_run, tmp_path / "a", lambda c: _truncate(c / "adapter_model.safetensors")),
                    data)
    assert "checkpoint-4" in line and "not a readable safetensors file" in line
    line = _refused(reg, _damaged_copy(plain_run, tmp_path / "b", lambda c: _truncate(c / "optimizer.pt")), data)
    assert "checkpoint-4/optimizer.pt is damaged" in line
    line = _refused(reg, _damaged_copy(plain_run, tmp_path / "c", lambda c: (c / "trainer_state.json").unlink()),
                    data)
    assert "checkpoint-4 holds no trainer state" in line

    add_local_base(reg, "wide", make_tiny_base(tmp_path / "wide", hidden_size=96))
    line = _refused(reg, plain_run["output_dir"], data, base="wide")
    assert "another model than base 'wide'" in line and "--base" in line

    def unnamed(checkpoint: Path) -> None:  # the shapes alone tell the base apart
        for step in (2, 4):
            config_file = checkpoint.parent / f"checkpoint-{step}" / "adapter_config.json"
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": None}))
    line = _refused(reg, _damaged_copy(plain_run, tmp_path / "d", unnamed), data, base="wide")
    assert "checkpoint-2: " in line and "expected" in line and "base 'wide' weight" in line

    line = _refused(reg, plain_run["output_dir"], data, "--set", "learning_rate=5e-4")
    assert "learning_rate=0.0005 contradicts the checkpoint, which says 0.001" in line
    line = _refused(reg, plain_run["output_dir"], data, "--set", "lr_scheduler_type=cosine")
    assert "the run logged learning rate" in line and "lr_scheduler_type" in line
