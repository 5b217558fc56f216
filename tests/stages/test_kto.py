"""The kto stage: against plain TRL KTOTrainer from an SFT parent, and refusals in check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptr import StageRequest, run_stage
from adaptr.demo import UNPAIRED_DATA, data_file
from conftest import dump_registry, run_cli

from .conftest import FAST_DPO, first_logged

FAST_KTO = dict(FAST_DPO)


@pytest.fixture(scope="session")
def kto_data():
    return data_file(UNPAIRED_DATA)


def _plain_trl_kto(tmp_path, tiny_base_dir, parent_dir, data, **settings):
    """What a TRL user writes: the SFT adapter loaded trainable (TRL copies it into its `ref`
    adapter, the reference policy), KTOTrainer, the same settings (adaptr's optimizer default
    is adamw_torch; transformers' is the fused one)."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import KTOConfig, KTOTrainer

    set_seed(42)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir), str(parent_dir),
                                      is_trainable=True)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    args = KTOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                     save_strategy="no", logging_first_step=True, dataloader_pin_memory=False,
                     activation_checkpointing=False, disable_tqdm=True, seed=42, optim="adamw_torch", **settings)
    trainer = KTOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(tiny_base_dir))
    trainer.train()
    model.save_pretrained(str(tmp_path / "trl-adapter"), selected_adapters=["default"], save_embedding_layers=False)
    return trainer, tmp_path / "trl-adapter"


def test_kto_from_sft_is_plain_trl_ktotrainer(sft_registry, kto_data, tmp_path, tiny_base_dir):
    import torch
    from safetensors.torch import load_file

    run = run_stage(sft_registry, StageRequest(stage="kto", parent="sft-v1", data=str(kto_data), config=FAST_KTO))
    assert run["status"] == "succeeded", run.get("error")
    child = sft_registry.resolve(run["output_ref"])
    assert child["parents"] == [{"ref": "sft-v1", "kind": "adapter", "relation": "continued",
                                 "params": {"mode": "continue", "reference_policy": "sft-v1"}}]
    assert child["record"]["trainer"] == "trl.KTOTrainer" and child["record"]["data"]["format"] == "unpaired_preference"
    # Step 1: the policy is the parent, and so is the reference: every reward is exactly 0.
    logged = first_logged(sft_registry, child["ref"])
    assert logged["rewards/chosen"] == 0 and logged["rewards/rejected"] == 0 and logged["kl"] == 0
    saved = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    assert child["record"]["parameters"]["trainable"] == sum(t.numel() for t in saved.values())  # not `ref`

    trainer, trl_dir = _plain_trl_kto(tmp_path, tiny_base_dir, sft_registry.resolve("sft-v1")["path"], kto_data,
                                      **FAST_KTO)
    theirs = load_file(str(trl_dir / "adapter_model.safetensors"))
    assert saved.keys() == theirs.keys()
    assert all(torch.equal(saved[k], theirs[k]) for k in saved)  # the same adapter, bit for bit
    expected = {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}
    recorded = {m["step"]: m["value"] for m in sft_registry.metrics(run["id"], "loss")}
    assert recorded == pytest.approx(expected, abs=1e-6) and sorted(recorded) == [1, 2, 3]


def _rows(tmp_path, rows) -> Path:
    path = tmp_path / "unpaired.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"prompt": "What is 1 + 1?", "completion": " 2", "label": True}
REFUSALS = {
    "label not a boolean": ([GOOD, {**GOOD, "label": "yes"}], [], "row 2: key 'label' is a str; expected true"),
    "label as a number": ([GOOD, GOOD, {**GOOD, "label": 1}], [], "row 3: key 'label' is an int"),
    "no label": ([GOOD, {"prompt": "p", "completion": "c"}], [], "row 2: key 'label' is missing"),
    "no label anywhere": ([{"prompt": "p", "completion": "c"}], [], "expected prompt/completion/label"),
    "batch of one": ([GOOD, {**GOOD, "label": False}], ["--per-device-train-batch-size", "1"],
                     "loss_type kto needs per_device_train_batch_size >= 2"),
    "random sampling": ([GOOD, {**GOOD, "label": False}], ["--set", "train_sampling_strategy=random"],
                        "needs train_sampling_strategy sequential"),
    "bias": ([GOOD, {**GOOD, "label": False}], ["--mode", "stack", "--bias", "all"], "kto with bias=all"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_kto_input_exits_2_in_check(case, sft_registry, tmp_path):
    rows, args, expected = REFUSALS[case]
    before = dump_registry(sft_registry.root)
    proc = run_cli("train", "kto", "--from", "sft-v1", "--data", str(_rows(tmp_path, rows)), *args,
                   "--max-steps", "1", registry=sft_registry)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "hint:" in proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert dump_registry(sft_registry.root) == before
