"""The oracle: what plain transformers and PEFT give for the same work. Never adaptr's loaders."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .conftest import PROBE


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROBE)).logits.float()


def base_model(base_dir: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)


def peft_model(base_dir: Path, adapter_dirs: list[Path], dtype=torch.float32, model=None):
    """The base with every adapter loaded (each under its own name) and all of them active."""
    from peft import PeftModel

    model = model if model is not None else base_model(base_dir, dtype)
    names = [f"a{i}" for i in range(len(adapter_dirs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(model, str(adapter_dirs[0]), adapter_name=names[0])
        for path, name in zip(adapter_dirs[1:], names[1:]):
            model.load_adapter(str(path), adapter_name=name)
    if len(names) > 1:
        model.base_model.set_adapter(names)
    return model


def untied(model):
    """``model`` with lm_head given its own copy of the tied embedding (as tie_word_embeddings=False)."""
    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    return model


def merged_state(base_dir: Path, adapter_dirs: list[Path], *, untie: bool) -> dict:
    """``merge_and_unload`` of the adapters on the fp32 base: every tensor of the merged model."""
    model = base_model(base_dir)
    if untie:
        model = untied(model)
    merged = peft_model(base_dir, adapter_dirs, model=model).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def model_state(model_dir: Path, dtype=None) -> dict:
    """Every tensor of a saved model, as transformers loads it (tied weights under both names)."""
    model = base_model(model_dir, dtype=dtype or "auto")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def weighted_adapter(base_dir: Path, adapter_dirs: list[Path], method: str, weights: list[float]) -> dict:
    """PEFT's ``add_weighted_adapter`` on the real base: the combined adapter's saved tensors."""
    from peft import get_peft_model_state_dict

    model = peft_model(base_dir, adapter_dirs)
    names = [f"a{i}" for i in range(len(adapter_dirs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_weighted_adapter(names, weights, "combined", combination_type=method)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name="combined",
                                                                           save_embedding_layers=False).items()}


def bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest elementwise |a - b| in bf16 ulps of the larger magnitude."""
    a, b = a.float(), b.float()
    magnitude = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(torch.bfloat16).tiny)
    return ((a - b).abs() / torch.exp2(torch.floor(torch.log2(magnitude)) - 7)).max().item()


def assert_close(mine: dict, reference: dict, atol: float = 1e-6) -> None:
    assert mine.keys() == reference.keys(), sorted(set(mine) ^ set(reference))[:5]
    for key, value in reference.items():
        torch.testing.assert_close(mine[key].float(), value.float(), rtol=0, atol=atol, msg=key)
