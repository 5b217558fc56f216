"""The streaming merge into a base equals PEFT's merge_and_unload + save_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adaptr.hf.merge import merge_chain

from .conftest import merge_into_base


def peft_merged(base_dir, adapter_dirs, dtype, out_dir: Path) -> Path:
    """The reference: transformers + PEFT in memory, all adapters active, then save_pretrained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    names = [f"a{i}" for i in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(model, adapter_dirs[0], adapter_name=names[0])
    for path, name in zip(adapter_dirs[1:], names[1:]):
        model.load_adapter(path, adapter_name=name)
    model.base_model.set_adapter(names)
    model.merge_and_unload().save_pretrained(out_dir)
    return out_dir


def test_bf16_base_within_one_ulp_of_peft(merge_registry, add_lora, model_tensors, ulps, tmp_path):
    adapter = add_lora("sft", base="tiny16", seed=1, scale_b=0.3)
    derived = merge_into_base(merge_registry, adapter, name="sft-merged", dtype="bf16")
    ref = model_tensors(peft_merged(merge_registry.base("tiny16")["path"], [adapter["path"]], torch.bfloat16,
                                    tmp_path / "ref"))
    mine = model_tensors(derived["path"])
    assert mine.keys() == ref.keys()
    assert all(mine[k].dtype == torch.bfloat16 for k in mine)
    worst = max(ulps(ref[k], mine[k]).max().item() for k in ref)
    assert worst <= 1.0
    changed = [k for k in ref if "q_proj" in k and not torch.equal(mine[k], model_tensors(
        merge_registry.base("tiny16")["path"])[k])]
    assert changed, "the merge changed no target weight"


def test_fp32_base_to_bf16_and_fp32(merge_registry, add_lora, model_tensors, ulps, tmp_path):
    adapter = add_lora("sft", seed=2, use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 16})
    base_dir = merge_registry.base("tiny")["path"]
    reference = model_tensors(peft_merged(base_dir, [adapter["path"]], torch.float32, tmp_path / "ref"))
    exact = model_tensors(merge_into_base(merge_registry, adapter, name="m32", dtype="fp32")["path"])
    rounded = model_tensors(merge_into_base(merge_registry, adapter, name="m16", dtype="bf16")["path"])
    for key, value in reference.items():
        torch.testing.assert_close(exact[key], value, rtol=0, atol=2e-6)
        assert ulps(value.to(torch.bfloat16), rounded[key]).max().item() <= 1.0


def test_output_is_a_sharded_loadable_model(merge_registry, add_lora):
    from transformers import AutoModelForCausalLM

    adapter = add_lora("sft", seed=3)
    derived = merge_into_base(merge_registry, adapter, dtype="bf16")
    path = Path(derived["path"])
    base_dir = Path(merge_registry.base("tiny")["path"])
    assert sorted(p.name for p in path.glob("*.safetensors")) == sorted(p.name for p in base_dir.glob("*.safetensors"))
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(2 * v.numel() for v in
                                                  AutoModelForCausalLM.from_pretrained(path).state_dict().values())
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    assert (path / "tokenizer.json").is_file()
    assert derived["name"] == "sft-v1-merged" and derived["source_kind"] == "derived"
    assert derived["dtype"] == "BF16"
    assert derived["parents"][0] == {"ref": "sft-v1", "kind": "adapter", "relation": "merged",
                                     "params": {"dtype": "bf16", "chain": ["sft-v1"]}}
    assert {"ref": "tiny", "kind": "base", "relation": "merged", "params": {"role": "base"}} in derived["parents"]
    assert derived.record.merge.tensors_merged == 6


def test_dora_embedding_and_modules_to_save_exact(merge_registry, add_lora, model_tensors, tmp_path):
    dora = add_lora("dora", seed=4, use_dora=True)
    embed = add_lora("embed", seed=5, target_modules=("q_proj", "embed_tokens"), modules_to_save=["lm_head"])
    base_dir = merge_registry.base("tiny")["path"]
    for adapter in (dora, embed):
        reference = model_tensors(peft_merged(base_dir, [adapter["path"]], torch.float32, tmp_path / adapter["name"]))
        mine = model_tensors(merge_into_base(merge_registry, adapter, dtype="fp32")["path"])
        for key, value in reference.items():
            torch.testing.assert_close(mine[key], value, rtol=1e-6, atol=2e-6)


def test_stacked_chain_merges_parent_first(merge_registry, add_lora, model_tensors, tmp_path):
    sft = add_lora("sft", seed=6)
    dpo = add_lora("dpo", seed=7, target_modules=("q_proj", "o_proj"), parents=[(sft, "stacked", {"mode": "stack"})])
    more = add_lora("dpo", seed=8, target_modules=("q_proj", "o_proj"),
                    parents=[(dpo, "continued", {"mode": "continue"})])
    assert [a["ref"] for a in merge_chain(merge_registry, dpo)] == ["sft-v1", "dpo-v1"]
    assert [a["ref"] for a in merge_chain(merge_registry, more)] == ["sft-v1", "dpo-v2"]
    derived = merge_into_base(merge_registry, more, dtype="fp32")
    assert derived.record.merge.chain == ["sft-v1", "dpo-v2"]
    assert [p["ref"] for p in derived["parents"]] == ["dpo-v2", "sft-v1", "tiny"]
    base_dir = merge_registry.base("tiny")["path"]
    reference = model_tensors(peft_merged(base_dir, [sft["path"], more["path"]], torch.float32, tmp_path / "ref"))
    mine = model_tensors(derived["path"])
    for key, value in reference.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=2e-6)


def test_adapter_on_a_derived_base_merges_onto_it(merge_registry, add_lora, model_tensors, tmp_path):
    sft = add_lora("sft", seed=9)
    derived = merge_into_base(merge_registry, sft, name="tiny-sft", dtype="fp32")
    dpo = add_lora("dpo", base="tiny-sft", seed=10, parents=[(sft, "merged", {"mode": "merge"})])
    assert [a["ref"] for a in merge_chain(merge_registry, dpo)] == ["dpo-v1"]
    final = merge_into_base(merge_registry, dpo, dtype="fp32")
    reference = model_tensors(peft_merged(derived["path"], [dpo["path"]], torch.float32, tmp_path / "ref"))
    for key, value in reference.items():
        torch.testing.assert_close(model_tensors(final["path"])[key], value, rtol=0, atol=2e-6)
    ancestors = {e["parent_ref"] for e in merge_registry.ancestors(final["id"])}
    assert {"dpo-v1", "tiny-sft", "sft-v1", "tiny"} <= ancestors


def test_qlora_adapter_recorded(merge_registry, add_lora):
    adapter = add_lora("q", seed=11, record={"quantize": "4bit"})
    derived = merge_into_base(merge_registry, adapter, dtype="bf16")
    note = derived.record.merge.quantized_training
    assert note["adapters"] == ["q-v1"] and note["quantize"] == "4bit"
    assert "unquantized" in note["note"]


def test_single_file_base(registry_with_base, make_lora, model_tensors, tmp_path):
    base_dir = registry_with_base.base("tiny")["path"]
    assert not (Path(base_dir) / "model.safetensors.index.json").exists()
    with registry_with_base.store.staging("test") as staged:
        make_lora(base_dir, staged, seed=12)
        adapter = registry_with_base.publish_adapter(staged, name="one", base="tiny", stage="test")
    derived = merge_into_base(registry_with_base, adapter, dtype="fp32")
    reference = model_tensors(peft_merged(base_dir, [adapter["path"]], torch.float32, tmp_path / "ref"))
    mine = model_tensors(derived["path"])
    assert [p.name for p in Path(derived["path"]).glob("*.safetensors")] == ["model.safetensors"]
    for key, value in reference.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=2e-6)
