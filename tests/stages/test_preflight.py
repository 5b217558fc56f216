"""What `check` decides before any weight loads: library constructor errors become one-line
refusals, the tokenizer meets the first rows, and the trainer gets the very config check built.
And the post-training checks can fail: the fingerprint sees base writes, the file check sees
tensors that should not be there."""

from __future__ import annotations

import json
import shutil

import pytest

from adaptr import StageRequest, run_stage
from adaptr.errors import ConflictError, IntegrityError, UsageError
from adaptr.stages import prepare

from conftest import dump_registry

from .conftest import FAST_SFT


def _refused(registry, request, error, match):
    before = dump_registry(registry.root)
    with pytest.raises(error, match=match) as caught:
        run_stage(registry, request)
    assert caught.value.hint and "\n" not in str(caught.value)
    assert dump_registry(registry.root) == before
    assert not registry.query("SELECT id FROM runs")
    return caught.value


def test_targets_that_match_nothing_are_refused_naming_the_layers(registry_with_base, sft_data):
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data),
                           config={**FAST_SFT, "target_modules": ["attention.query"]})
    error = _refused(registry_with_base, request, UsageError, "PEFT cannot put this adapter on the base")
    assert "q_proj" in error.hint


def test_trl_and_transformers_validation_runs_in_check(registry_with_base, sft_data, dpo_data):
    bad_schedule = StageRequest(stage="sft", base="tiny", data=str(sft_data),
                                config={**FAST_SFT, "lr_scheduler_type": "sideways"})
    _refused(registry_with_base, bad_schedule, UsageError, "TRL refused the SFTConfig settings")
    bad_loss = StageRequest(stage="dpo", base="tiny", data=str(dpo_data), config={"loss_type": ["nope"]})
    _refused(registry_with_base, bad_loss, UsageError, "'nope' is not a loss TRL's DPOTrainer knows")
    bad_pattern = StageRequest(stage="sft", base="tiny", data=str(sft_data),
                               config={**FAST_SFT, "rank_pattern": "{v_proj: 2"})
    _refused(registry_with_base, bad_pattern, UsageError, "rank_pattern=.* is not JSON")


def _base_without_chat_template(registry, tiny_base_dir, tmp_path, template=None):
    from adaptr.bases import add_local_base

    copy = tmp_path / "plain"
    shutil.copytree(tiny_base_dir, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if template:
        config["chat_template"] = template
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    add_local_base(registry, "plain", copy)


def test_conversational_rows_need_a_chat_template(registry, tiny_base_dir, tmp_path, sft_data):
    _base_without_chat_template(registry, tiny_base_dir, tmp_path)
    request = StageRequest(stage="sft", base="plain", data=str(sft_data), config=FAST_SFT)
    _refused(registry, request, UsageError, r"sft.jsonl: row 1: the tokenizer cannot encode it")


def test_assistant_only_loss_needs_generation_marks(registry_with_base, sft_data):
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data),
                           config={**FAST_SFT, "assistant_only_loss": True})
    _refused(registry_with_base, request, UsageError, "TRL has no training version of this base's chat template")


def test_the_trainer_gets_the_config_check_built(registry_with_base, sft_data, monkeypatch):
    from adaptr.hf import training

    ctx = prepare(registry_with_base, StageRequest(stage="sft", base="tiny", data=str(sft_data), config=FAST_SFT))
    plan = ctx.plan
    seen = {}
    original = training._publish

    def spy(ctx, plan_, built, *args):
        seen["args"], seen["plan"] = built.trainer.args, plan_
        return original(ctx, plan_, built, *args)

    monkeypatch.setattr(training, "_publish", spy)
    run = registry_with_base.create_run(stage="sft", request=ctx.request.to_dict(), config={}, status="running")
    from adaptr.stages import execute

    assert execute(ctx, run)["status"] == "succeeded"
    assert seen["plan"] is plan and seen["args"] is plan.args
    assert plan.args.output_dir == str(ctx.run_dir / "trainer")


# -- the post-training checks can fail -----------------------------------------------------------


@pytest.fixture
def tiny_model(tiny_base_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_base_dir)


def test_fingerprint_sees_every_kind_of_base_write(tiny_model):
    import torch

    from adaptr.hf.checks import base_fingerprint

    weight = tiny_model.model.layers[0].self_attn.q_proj.weight
    name = "model.layers.0.self_attn.q_proj.weight"
    start = base_fingerprint(tiny_model)
    assert start.changed(base_fingerprint(tiny_model)) == []
    with torch.no_grad():
        weight[3, 5] += 1.0  # in place through the parameter: its version counter moves
    assert start.changed(base_fingerprint(tiny_model)) == [name]
    start = base_fingerprint(tiny_model)
    weight.data[7] += 1.0  # through .data, which the version counter does not see: a whole row
    assert start.changed(base_fingerprint(tiny_model), identity=False) == [name]
    start = base_fingerprint(tiny_model)
    weight.data = weight.data.clone()  # same values, another tensor
    assert start.changed(base_fingerprint(tiny_model)) == [name]
    assert start.changed(base_fingerprint(tiny_model), identity=False) == []


def test_fingerprint_leaves_out_what_the_adapter_owns(tiny_model):
    from adaptr.hf.checks import base_fingerprint

    owned = {"model.norm.weight"}
    assert "model.norm.weight" not in base_fingerprint(tiny_model, owned).tensors
    assert len(base_fingerprint(tiny_model).tensors) == len(base_fingerprint(tiny_model, owned).tensors) + 1


def test_adapter_file_check_refuses_unexpected_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from adaptr.hf.checks import check_adapter_file

    tensors = {"base_model.model.q.lora_A.weight": torch.ones(2, 4), "base_model.model.q.bias": torch.ones(4)}
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    expected = {"base_model.model.q.lora_A.weight": (2, 4)}
    with pytest.raises(IntegrityError, match="unexpected"):
        check_adapter_file(tmp_path, {}, expected)
    with pytest.raises(IntegrityError, match="has shape"):
        check_adapter_file(tmp_path, {}, {**expected, "base_model.model.q.bias": (5,)})
    before = {k: v.clone() for k, v in tensors.items()}
    with pytest.raises(IntegrityError, match="unchanged"):
        check_adapter_file(tmp_path, before, {**expected, "base_model.model.q.bias": (4,)})


def test_peft_and_adaptr_disagreeing_on_the_tensors_is_refused(tiny_base_dir, monkeypatch):
    from adaptr.hf import checks, preflight
    from adaptr.hf.recipe import TrainRecipe

    real = checks.expected_tensors
    monkeypatch.setattr(checks, "expected_tensors", lambda *a: {k: v for k, v in list(real(*a).items())[1:]})
    base = {"name": "tiny", "path": str(tiny_base_dir)}
    lora = preflight.lora_config(TrainRecipe(target_modules=["q_proj"]))
    with pytest.raises(ConflictError, match="PEFT would save tensors it does not expect"):
        preflight.tensor_plan(preflight.meta_model(base), [], lora=lora)


# -- trainer options reach the TrainingArguments they are meant for --------------------------


def test_curated_and_passthrough_options_reach_the_trl_config(registry_with_base, sft_data, dpo_data):
    """Curated fields (learning_rate, max_steps) and any other field of TRL's config class
    (given as --set KEY=VALUE, parsed from text) land in the config TRL's trainer is built with."""
    from adaptr.config import parse_sets

    sets = parse_sets(["neftune_noise_alpha=5", "save_total_limit=2", "dataloader_num_workers=0",
                       "max_grad_norm=0.25", "lr_scheduler_type=cosine", "warmup_steps=3", "packing=true"])
    ctx = prepare(registry_with_base, StageRequest(stage="sft", base="tiny", data=str(sft_data),
                                                   config={**FAST_SFT, "learning_rate": 3e-3, **sets}))
    args = ctx.plan.args
    assert type(args).__name__ == "SFTConfig"
    assert (args.learning_rate, args.max_steps) == (3e-3, FAST_SFT["max_steps"])
    assert (args.neftune_noise_alpha, args.dataloader_num_workers) == (5.0, 0)
    # save_total_limit is adaptr's pruning policy (the last N + the best, never the one a resume
    # needs), so TRL's own pruning is off
    assert args.save_total_limit is None and ctx.plan.keep_checkpoints == 2
    assert args.max_grad_norm == 0.25 and args.warmup_steps == 3 and args.packing is True
    assert str(args.lr_scheduler_type) in ("cosine", "SchedulerType.COSINE")
    assert ctx.config.trainer_options["neftune_noise_alpha"] == 5  # recorded with the run's config

    ctx = prepare(registry_with_base, StageRequest(stage="dpo", base="tiny", data=str(dpo_data),
                                                   config={**FAST_SFT, **parse_sets(["beta=0.3", "discopop_tau=0.2", "truncation_mode=keep_start"])}))
    assert type(ctx.plan.args).__name__ == "DPOConfig"
    assert (ctx.plan.args.beta, ctx.plan.args.discopop_tau, ctx.plan.args.truncation_mode) == (0.3, 0.2, "keep_start")


@pytest.mark.parametrize(("sets", "error", "words"), [
    (["output_dir=/tmp/x"], UsageError, "output_dir is set by adaptr"),
    (["save_strategy=epoch"], UsageError, "--save-steps"),
    (["push_to_hub=true"], UsageError, "adaptr push"),
    (["neftune_noise_alpha=loud"], UsageError, "neftune_noise_alpha"),
    (["no_such_option=1"], UsageError, "no_such_option"),
])
def test_owned_unknown_and_mistyped_options_are_refused_before_work(registry_with_base, sft_data, sets, error,
                                                                     words):
    from adaptr.config import parse_sets

    request = StageRequest(stage="sft", base="tiny", data=str(sft_data), config={**FAST_SFT, **parse_sets(sets)})
    _refused(registry_with_base, request, error, words)
