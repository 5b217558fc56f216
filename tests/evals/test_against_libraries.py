"""The built-in evaluators against TRL's trainers and transformers doing the same thing."""

from __future__ import annotations

import json

import pytest

from adaptr import evals, evalstore, load
from adaptr.hf import data as data_mod

pytestmark = pytest.mark.slow


def _args(config_class, tmp_path, rows: int, **kwargs):
    return config_class(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True,
                        per_device_eval_batch_size=rows, **kwargs)


def test_loss_is_sfttrainer_eval_loss(eval_registry, heldout_sft, tmp_path):
    from trl import SFTConfig, SFTTrainer

    job = evals.plan(eval_registry, ["sft-v1"], heldout_sft, settings={"batch_size": "12"})  # one batch, as below
    (result,) = evals.execute(job)
    rows = data_mod.load(heldout_sft, (data_mod.MESSAGES, data_mod.PROMPT_COMPLETION, data_mod.TEXT)).rows
    from adaptr.hf.loading import load_tokenizer

    trainer = SFTTrainer(model=load("sft-v1", registry=eval_registry), args=_args(SFTConfig, tmp_path, len(rows)),
                         train_dataset=data_mod.to_dataset(rows), eval_dataset=data_mod.to_dataset(rows),
                         processing_class=load_tokenizer(eval_registry.base("tiny")))
    # One batch holding every row: TRL's eval_loss is then the token-weighted mean, as ours is. The
    # Trainer's evaluation changes torch's CPU threading (accelerate), which reorders float32 sums:
    # the two agree to about 1e-5, not bit for bit.
    assert result["metrics"]["loss"] == pytest.approx(trainer.evaluate()["eval_loss"], rel=2e-4)
    assert result["metrics"]["perplexity"] == pytest.approx(2.718281828459045 ** result["metrics"]["loss"])


def test_preference_is_dpotrainer_reward_accuracy_and_margin(eval_registry, heldout_prefs, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from adaptr.hf.loading import load_tokenizer

    job = evals.plan(eval_registry, ["dpo-v1"], heldout_prefs, settings={"beta": "0.2"})
    (result,) = evals.execute(job)
    rows = data_mod.load(heldout_prefs, (data_mod.PREFERENCE,)).rows
    # TRL takes a separate reference only as a plain model: sft-v1 merged into its base.
    reference = load("sft-v1", registry=eval_registry).merge_and_unload()
    trainer = DPOTrainer(model=load("dpo-v1", registry=eval_registry), ref_model=reference,
                         args=_args(DPOConfig, tmp_path, len(rows), beta=0.2),
                         train_dataset=data_mod.to_dataset(rows), eval_dataset=data_mod.to_dataset(rows),
                         processing_class=load_tokenizer(eval_registry.base("tiny")))
    expected = trainer.evaluate()
    assert result["reference"] == "sft-v1"
    assert result["metrics"]["accuracy"] == pytest.approx(expected["eval_rewards/accuracies"], abs=1e-6)
    # Rewards are differences of summed float32 log-probs (about -60 each), computed here through
    # the LoRA layers and there through weights merged into the base, with other CPU threading.
    assert result["metrics"]["margin"] == pytest.approx(expected["eval_rewards/margins"], rel=2e-3)
    assert result["metrics"]["chosen_reward"] == pytest.approx(expected["eval_rewards/chosen"], abs=2e-3)


def test_generate_is_greedy_transformers_generate(eval_registry, heldout_prompts):
    import torch

    from adaptr.hf.loading import load_tokenizer

    job = evals.plan(eval_registry, ["dpo-v1"], heldout_prompts, settings={"max_new_tokens": "6"})
    (result,) = evals.execute(job)
    outputs = evalstore.outputs(eval_registry, result["id"])
    assert [o["row"] for o in outputs] == list(range(1, 13))
    tokenizer = load_tokenizer(eval_registry.base("tiny"))
    model = load("dpo-v1", registry=eval_registry)
    row = json.loads(heldout_prompts.read_text().splitlines()[3])
    text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, do_sample=False, max_new_tokens=6, pad_token_id=tokenizer.pad_token_id)
    assert outputs[3]["output"] == tokenizer.decode(out[0, ids["input_ids"].size(1):], skip_special_tokens=True)
    assert outputs[3]["expected"] == row["expected"]
    assert result["metrics"]["score"] == sum(o["score"] for o in outputs) / 12
