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
