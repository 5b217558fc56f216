"""Checking LoRA tensor shapes against a base from safetensors headers alone."""

import pytest

from adaptr.errors import ConflictError
from adaptr.peftdir import AdapterDir, base_weight_key, check_against_base, expected_rank

BASE = {
    "model.layers.0.self_attn.q_proj.weight": {"shape": [64, 32]},
    "model.layers.0.mlp.down_proj.weight": {"shape": [32, 128]},
    "model.embed_tokens.weight": {"shape": [500, 32]},
    "transformer.h.0.attn.c_attn.weight": {"shape": [32, 96]},  # GPT-2 Conv1D: [in, out]
}
PREFIX = "base_model.model."


def _adapter(tensors, **config):
    return AdapterDir(path=None, config={"peft_type": "LORA", "r": 4, **config},
                      tensors={k: {"shape": v} for k, v in tensors.items()}, files=[])


def test_base_weight_key():
    assert base_weight_key(PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight") == (
        "model.layers.0.self_attn.q_proj.weight", "A")
    assert base_weight_key(PREFIX + "model.layers.0.self_attn.q_proj.lora_B.default.weight") == (
        "model.layers.0.self_attn.q_proj.weight", "B")
    assert base_weight_key(PREFIX + "model.embed_tokens.lora_embedding_A") == ("model.embed_tokens.weight", "A")
    assert base_weight_key(PREFIX + "model.layers.0.self_attn.q_proj.lora_magnitude_vector") is None


def test_linear_and_embedding_shapes_fit():
    adapter = _adapter({
        PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight": [4, 32],
        PREFIX + "model.layers.0.self_attn.q_proj.lora_B.weight": [64, 4],
        PREFIX + "model.embed_tokens.lora_embedding_A": [4, 500],
        PREFIX + "model.embed_tokens.lora_embedding_B": [32, 4],
    })
    assert check_against_base(adapter, BASE, "b") == 4


def test_fan_in_fan_out_layout():
    adapter = _adapter({PREFIX + "transformer.h.0.attn.c_attn.lora_A.weight": [4, 32],
                        PREFIX + "transformer.h.0.attn.c_attn.lora_B.weight": [96, 4]},
                       fan_in_fan_out=True)
    assert check_against_base(adapter, BASE, "b") == 2


def test_rank_pattern_overrides_r():
    config = {"r": 4, "rank_pattern": {"down_proj": 8}}
    assert expected_rank(config, "model.layers.0.mlp.down_proj.weight") == 8
    assert expected_rank(config, "model.layers.0.self_attn.q_proj.weight") == 4
    adapter = _adapter({PREFIX + "model.layers.0.mlp.down_proj.lora_A.weight": [8, 128],
                        PREFIX + "model.layers.0.mlp.down_proj.lora_B.weight": [32, 8]},
                       rank_pattern={"down_proj": 8})
    assert check_against_base(adapter, BASE, "b") == 2


def test_backbone_only_base_keys():
    bare = {k.removeprefix("model."): v for k, v in BASE.items()}
    adapter = _adapter({PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight": [4, 32]})
    assert check_against_base(adapter, bare, "b") == 1


@pytest.mark.parametrize("tensors, message", [
    ({PREFIX + "model.layers.0.self_attn.k_proj.lora_A.weight": [4, 32]}, "has no module"),
    ({PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight": [4, 33]}, "expected [4, 32]"),
    ({PREFIX + "model.layers.0.self_attn.q_proj.lora_B.weight": [64, 8]}, "expected [64, 4]"),
])
def test_mismatches(tensors, message):
    with pytest.raises(ConflictError) as info:
        check_against_base(_adapter(tensors, base_model_name_or_path="org/base"), BASE, "b")
    assert message in info.value.message and "org/base" in info.value.hint


def test_a_linear_layer_under_fan_in_fan_out_keeps_its_own_layout():
    """PEFT picks the layout by layer type: GPT-2's lm_head is a Linear even with fan_in_fan_out."""
    base = {**BASE, "lm_head.weight": {"shape": [500, 32]}}
    adapter = _adapter({PREFIX + "lm_head.lora_A.weight": [4, 32], PREFIX + "lm_head.lora_B.weight": [500, 4]},
                       fan_in_fan_out=True)
    assert check_against_base(adapter, base, "b") == 2
    wrong = _adapter({PREFIX + "lm_head.lora_A.weight": [4, 31]}, fan_in_fan_out=True)
    with pytest.raises(ConflictError, match="expected"):
        check_against_base(wrong, base, "b")


def test_named_adapters_are_found_in_their_subfolder(tmp_path):
    import json

    from adaptr.errors import UsageError
    from adaptr.peftdir import read_adapter_dir

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(UsageError, match="holds 2 named adapters"):
        read_adapter_dir(tmp_path)
    with pytest.raises(UsageError, match="no adapter_model.safetensors"):
        read_adapter_dir(tmp_path / "one")  # found, then checked like any adapter directory
    (tmp_path / "two" / "adapter_config.json").unlink()
    with pytest.raises(UsageError, match="no adapter_model.safetensors"):
        read_adapter_dir(tmp_path)  # the one named adapter's folder is the adapter
