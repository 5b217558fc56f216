"""Weighted merges: the same tensors as PEFT's own add_weighted_adapter, lineage with parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptr import StageRequest, run_stage


def peft_combined(base_dir, adapter_dirs, weights, method, density=None, seed=0) -> dict:
    """PEFT's own result, on the real base: the reference for the merged adapter's tensors."""
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    names = [f"p{i}" for i in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(model, adapter_dirs[0], adapter_name=names[0])
    for path, name in zip(adapter_dirs[1:], names[1:]):
        model.load_adapter(path, adapter_name=name)
    torch.manual_seed(seed)
    model.add_weighted_adapter(names, weights, "mix", combination_type=method, density=density)
    return get_peft_model_state_dict(model, adapter_name="mix")


def merge(registry, refs, name, **config) -> dict:
    request = StageRequest(stage="merge", parent=refs[0], name=name,
                           config={"adapters": list(refs[1:]), **config})
    run = run_stage(registry, request)
    assert run["status"] == "succeeded"
    return registry.resolve(run["output_ref"])


@pytest.mark.parametrize("method,weights,density", [
    ("linear", [0.7, 0.3], None),
    ("ties", [1.0, 0.5], 0.5),
    ("dare_linear", [1.0, 1.0], 0.7),
    ("cat", [0.5, 0.5], None),
    ("svd", [1.0, 1.0], None),
])
def test_equals_peft_add_weighted_adapter(merge_registry, add_lora, method, weights, density):
    from safetensors.torch import load_file

    a = add_lora("a", seed=1)
    b = add_lora("b", seed=2, target_modules=("q_proj", "v_proj", "o_proj"))
    config = {"method": method, "weights": weights, **({"density": density} if density else {})}
    merged = merge(merge_registry, ["a", "b"], "mix", **config)
    expected = peft_combined(merge_registry.base("tiny")["path"], [a["path"], b["path"]], weights, method, density)
    got = load_file(Path(merged["path"]) / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    assert [(p["ref"], p["relation"]) for p in merged["parents"]] == [("a-v1", "merged"), ("b-v1", "merged")]
    for parent, weight in zip(merged["parents"], weights):
        assert parent["params"]["method"] == method and parent["params"]["weight"] == weight
        assert parent["params"].get("density") == density
    assert merged["stage"] == "merge" and merged["base"] == "tiny"


def test_merged_adapter_loads_with_plain_peft(merge_registry, add_lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    add_lora("a", seed=3)
    add_lora("b", seed=4)
    merged = merge(merge_registry, ["a", "b"], "mix", method="linear", weights=[0.5, 0.5])
    model = AutoModelForCausalLM.from_pretrained(merge_registry.base("tiny")["path"])
    model = PeftModel.from_pretrained(model, merged["path"])
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()
    files = {p.name for p in Path(merged["path"]).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not any(Path(merged["path"], name).is_dir() for name in files)  # no stray adapter subfolder


def test_cat_accepts_different_ranks(merge_registry, add_lora):
    add_lora("a", seed=5, r=4)
    add_lora("b", seed=6, r=8)
    merged = merge(merge_registry, ["a", "b"], "mix", method="cat")
    assert merged["config"]["r"] == 12
