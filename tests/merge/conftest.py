"""Fixtures for the merge stage: a multi-shard tiny base and LoRA adapters made with PEFT directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARD = "50KB"


@pytest.fixture(scope="session")
def sharded_base_dir(tmp_path_factory) -> Path:
    """The tiny Llama in fp32, written in several safetensors shards."""
    from adaptr.hf.tiny import make_tiny_base

    path = make_tiny_base(tmp_path_factory.mktemp("sharded") / "tiny-sharded", max_shard_size=SHARD)
    assert len(list(path.glob("*.safetensors"))) > 1
    return path


@pytest.fixture(scope="session")
def sharded_bf16_base_dir(sharded_base_dir, tmp_path_factory) -> Path:
    """The same model stored in bf16, also in several shards."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("sharded16") / "tiny-sharded-bf16"
    model = AutoModelForCausalLM.from_pretrained(sharded_base_dir, dtype=torch.bfloat16)
    model.save_pretrained(path, max_shard_size=SHARD)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (sharded_base_dir / name).exists():
            shutil.copy(sharded_base_dir / name, path / name)
    assert len(list(path.glob("*.safetensors"))) > 1
    return path


@pytest.fixture
def merge_registry(registry, sharded_base_dir, sharded_bf16_base_dir):
    """A registry with the sharded tiny base as `tiny` (fp32) and `tiny16` (bf16)."""
    from adaptr.bases import add_local_base

    add_local_base(registry, "tiny", sharded_base_dir)
    add_local_base(registry, "tiny16", sharded_bf16_base_dir)
    return registry


def save_lora(base_dir: Path, out_dir: Path, *, seed: int = 0, r: int = 4, alpha: int = 8,
              target_modules=("q_proj", "v_proj", "down_proj"), scale_b: float = 0.05, **lora_kwargs) -> Path:
    """``get_peft_model`` on the base, lora_B perturbed so that ΔW ≠ 0, then ``save_pretrained``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), **lora_kwargs)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.normal_(0, scale_b)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.rand_like(param))
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


def publish_lora(registry, name: str, *, base: str = "tiny", parents=(), record=None,
                 config_changes=None, **kwargs) -> dict:
    """Make a LoRA on ``base`` with PEFT and publish it as the next version of ``name``
    (with ``config_changes`` written into its adapter_config.json first)."""
    base_dir = Path(registry.base(base)["path"])
    with registry.store.staging("test") as staged:
        save_lora(base_dir, staged, **kwargs)
        config = {**json.loads((staged / "adapter_config.json").read_text()), **(config_changes or {})}
        (staged / "adapter_config.json").write_text(json.dumps(config))
        return registry.publish_adapter(staged, name=name, base=base, stage="test", parents=list(parents),
                                        config=config, record=record or {})


@pytest.fixture
def make_lora():
    """``make_lora(base_dir, out_dir, **lora_kwargs)``: a PEFT adapter directory (see save_lora)."""
    return save_lora


@pytest.fixture
def add_lora(merge_registry):
    """``add_lora(name, parents=..., **lora_kwargs)``: publish a PEFT-made LoRA in the registry."""
    return lambda name, **kwargs: publish_lora(merge_registry, name, **kwargs)


def load_model_tensors(model_dir: Path) -> dict:
    """Every tensor of a safetensors model directory."""
    from safetensors.torch import load_file

    tensors = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def bf16_ulps(a, b):
    """Elementwise |a - b| in bf16 ulps of the larger magnitude."""
    import torch

    a, b = a.float(), b.float()
    magnitude = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(torch.bfloat16).tiny)
    return (a - b).abs() / torch.exp2(torch.floor(torch.log2(magnitude)) - 7)


@pytest.fixture
def model_tensors():
    return load_model_tensors


@pytest.fixture
def ulps():
    return bf16_ulps


def merge_into_base(registry, adapter: dict, name: str | None = None, dtype: str = "bf16") -> dict:
    """`adaptr merge REF --into-base` through the merge stage; returns the derived base."""
    from adaptr import StageRequest, run_stage

    run = run_stage(registry, StageRequest(stage="merge", parent=adapter["ref"], name=name,
                                           config={"into_base": True, "dtype": dtype}))
    assert run["status"] == "succeeded" and run["output_kind"] == "base", run
    return registry.base(run["output_ref"])
