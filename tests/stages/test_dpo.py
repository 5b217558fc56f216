"""The dpo stage from an SFT parent: continue (the default), stack and merge."""

from __future__ import annotations

from pathlib import Path

import pytest

import adaptr
from adaptr import StageRequest, run_stage

from .conftest import FAST_DPO, first_logged, logits


def _dpo(registry, data, **kwargs):
    config = {**FAST_DPO, **kwargs.pop("config", {})}
    run = run_stage(registry, StageRequest(stage="dpo", data=str(data), config=config, **kwargs))
    assert run["status"] == "succeeded"
    return registry.resolve(run["output_ref"])


def test_dpo_continue_starts_with_the_parent_as_reference(sft_registry, dpo_data):
    import torch
    from safetensors.torch import load_file

    parent = sft_registry.resolve("sft-v1")
    child = _dpo(sft_registry, dpo_data, parent="sft-v1")
    # At the first step the policy is the parent; a reference equal to it gives zero rewards.
    # (Were the reference the bare base, the SFT-trained parent would score non-zero rewards.)
    logged = first_logged(sft_registry, child["ref"])
    assert logged["rewards/chosen"] == 0 and logged["rewards/rejected"] == 0
    assert logged["rewards/margins"] == 0
    assert child["parents"] == [{"ref": "sft-v1", "kind": "adapter", "relation": "continued",
                                 "params": {"mode": "continue", "reference_policy": "sft-v1"}}]
    assert child["record"]["reference_policy"] == "sft-v1"
    names = {p.name for p in Path(child["path"]).iterdir()}
    assert "ref" not in names and "adapter_model.safetensors" in names
    before = load_file(str(Path(parent["path"]) / "adapter_model.safetensors"))
    after = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Only the trained adapter counts as trainable: TRL's frozen `ref` copy is not.
    assert child["record"]["parameters"]["trainable"] == sum(t.numel() for t in after.values())


def test_dpo_keeps_one_copy_of_the_base(sft_registry, dpo_data):
    child = _dpo(sft_registry, dpo_data, parent="sft-v1")
    total = child["record"]["parameters"]["total"]
    base_params = sft_registry.base("tiny")["num_parameters"]
    assert total - base_params == child["record"]["parameters"]["trainable"]


def test_stack_trains_a_new_adapter_on_the_frozen_parent(sft_registry, dpo_data, tiny_base_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    child = _dpo(sft_registry, dpo_data, parent="sft-v1", mode="stack", name="stacked",
                 config={"r": 4, "lora_alpha": 8})
    assert child["parents"][0]["relation"] == "stacked"
    assert child["parents"][0]["params"]["reference_policy"] == "sft-v1"
    logged = first_logged(sft_registry, child["ref"])
    assert logged["rewards/margins"] == 0  # reference = base + frozen parent
    # Only the new adapter trains: r=4 on 14 modules, not the parent's r=8 tensors as well.
    from safetensors.torch import load_file

    saved = load_file(str(Path(child["path"]) / "adapter_model.safetensors"))
    assert all(min(t.shape) == 4 for t in saved.values())
    assert child["record"]["parameters"]["trainable"] == sum(t.numel() for t in saved.values())
    model = adaptr.load(child["ref"], registry=sft_registry)
    assert sorted(model.active_adapters) == ["default", "sft-v1"]
    parent_only = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                                            sft_registry.resolve("sft-v1")["path"])
    assert not torch.allclose(logits(model), logits(parent_only))
    # The same stack, assembled by hand with PEFT, gives the same outputs.
    manual = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                                       sft_registry.resolve("sft-v1")["path"], adapter_name="p")
    manual.load_adapter(child["path"], adapter_name="c")
    manual.base_model.set_adapter(["p", "c"])
    assert torch.allclose(logits(model), logits(manual), atol=1e-6)


def test_continue_from_a_stacked_adapter_keeps_its_parent_loaded(sft_registry, dpo_data, sft_data):
    stacked = run_stage(sft_registry, StageRequest(stage="sft", parent="sft-v1", mode="stack", name="stk",
                                                   data=str(sft_data), config={"max_steps": 2, "r": 4}))
    child = _dpo(sft_registry, dpo_data, parent=stacked["output_ref"], name="stkdpo")
    relations = {(p["ref"], p["relation"]) for p in child["parents"]}
    assert relations == {("stk-v1", "continued"), ("sft-v1", "stacked")}
    assert first_logged(sft_registry, child["ref"])["rewards/margins"] == 0
    model = adaptr.load(child["ref"], registry=sft_registry)
    assert sorted(model.active_adapters) == ["default", "sft-v1"]


def test_merge_mode_trains_on_a_derived_base(sft_registry, dpo_data):
    pytest.importorskip("adaptr.hf.merge")
    child = _dpo(sft_registry, dpo_data, parent="sft-v1", mode="merge", name="onmerged")
    assert child["base"] == "sft-v1-merged"
    derived = sft_registry.base("sft-v1-merged")
    assert any(p["ref"] == "sft-v1" and p["relation"] == "merged" for p in derived["parents"])
    assert child["parents"][0]["ref"] == "sft-v1" and child["parents"][0]["relation"] == "merged"
    assert first_logged(sft_registry, child["ref"])["rewards/margins"] == 0  # reference = merged parent
    assert adaptr.load(child["ref"], registry=sft_registry) is not None
    again = _dpo(sft_registry, dpo_data, parent="sft-v1", mode="merge", name="onmerged")
    assert again["base"] == "sft-v1-merged"  # the derived base is made once
