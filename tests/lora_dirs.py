"""Real PEFT LoRA adapter directories for import tests, made with PEFT on the tiny base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_lora_dir(base_dir: Path, out_dir: Path, *, r: int = 4, seed: int = 0,
                  target_modules=("q_proj", "v_proj", "down_proj")) -> Path:
    """``get_peft_model`` on the base, then ``save_pretrained``: a real adapter directory."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules),
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


def pickled_only(good: Path, out_dir: Path) -> Path:
    """The same adapter with only adapter_model.bin (torch.save), as old PEFT wrote it."""
    import torch
    from safetensors.torch import load_file

    out_dir.mkdir(parents=True)
    shutil.copy(good / "adapter_config.json", out_dir)
    torch.save(load_file(good / "adapter_model.safetensors"), out_dir / "adapter_model.bin")
    return out_dir


def wrong_shapes(good: Path, out_dir: Path) -> Path:
    """An adapter whose q_proj lora_B has the wrong output size for the base."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(good, out_dir)
    tensors = load_file(good / "adapter_model.safetensors")
    key = next(k for k in sorted(tensors) if "q_proj.lora_B" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 8, tensors[key].shape[1])
    save_file(tensors, out_dir / "adapter_model.safetensors")
    return out_dir


def with_config(good: Path, out_dir: Path, **changes) -> Path:
    """A copy of ``good`` with keys of adapter_config.json replaced."""
    shutil.copytree(good, out_dir)
    config = json.loads((good / "adapter_config.json").read_text())
    config.update(changes)
    (out_dir / "adapter_config.json").write_text(json.dumps(config))
    return out_dir
