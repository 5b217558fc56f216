"""Loading bases and adapters the right way, for training and for :func:`adaptr.load`.

- A parent that is trained further is loaded with ``PeftModel.from_pretrained(is_trainable=True)``,
  never wrapped again with ``get_peft_model``.
- Adapters a version was *stacked* on are loaded first, frozen and active, under their own names;
  the adapter being trained or used last is always named ``default`` so TRL, the Trainer's
  checkpoint resume and ``save_pretrained`` all find it where they expect it.
- A derived (merged) base is just a base: its weights already hold the merged parent.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import MachineError, NotFoundError, UsageError
from ..registry import Registry

TRAINED = "default"


def frozen_chain(registry: Registry, adapter: dict) -> list[dict]:
    """Adapters that must be active beneath ``adapter`` (its stacked ancestry), deepest first."""
    chain: list[dict] = []
    for parent in adapter.get("parents", []):
        if parent["relation"] != "stacked" or parent["kind"] != "adapter":
            continue
        node = registry.resolve(parent["ref"])
        for below in frozen_chain(registry, node) + [node]:
            if below["id"] not in {c["id"] for c in chain}:
                chain.append(below)
    return chain


def adapter_name(ref: str) -> str:
    """A PEFT adapter name for a ref (module-dict keys may not contain dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", ref)


def model_source(base: dict) -> tuple[str, dict]:
    """Where ``from_pretrained`` finds a registered base, and the revision to pin."""
    if base.get("path") and Path(base["path"]).exists():
        return base["path"], {}
    if base.get("source_kind") == "hub":
        return base["source"], ({"revision": base["revision"]} if base.get("revision") else {})
    raise MachineError(f"base {base['name']!r} has no files at {base.get('path')}",
                       "restore the model directory, or pull the base again")


def quantization_config(quantize: str | None):
    if not quantize:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def check_quantize(quantize: str | None) -> None:
    """Refuse what this machine cannot do, before anything is loaded or written."""
    if not quantize:
        return
    if quantize != "4bit":
        raise UsageError(f"--quantize {quantize!r} is not supported", "use --quantize 4bit (QLoRA, NF4)")
    import torch

    if not torch.cuda.is_available():
        raise MachineError("--quantize 4bit needs a CUDA GPU and none is available here",
                           "run on a machine with an NVIDIA GPU, or drop --quantize")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MachineError("--quantize 4bit needs bitsandbytes, which is not installed",
                           "pip install 'adaptr[qlora]'") from None


def load_base_model(base: dict, *, quantize: str | None = None, dtype=None, device_map=None,
                    for_training: bool = False):
    """The base model of a registry base row (quantized for QLoRA when asked)."""
    import torch
    from transformers import AutoModelForCausalLM

    source, kwargs = model_source(base)
    if quantize:
        kwargs["quantization_config"] = quantization_config(quantize)
        kwargs["device_map"] = device_map or {"": torch.cuda.current_device()}
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = dtype or "auto"
        if device_map is not None:
            kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quantize and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def load_tokenizer(base: dict):
    from transformers import AutoTokenizer

    source, kwargs = model_source(base)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def attach_frozen(model, chain: list[dict]):
    """Load ``chain`` (deepest first) onto ``model`` as frozen adapters; return the PeftModel."""
    from peft import PeftModel

    for adapter in chain:
        name = adapter_name(adapter["ref"])
        if isinstance(model, PeftModel):
            model.load_adapter(adapter["path"], adapter_name=name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(model, adapter["path"], adapter_name=name,
                                              is_trainable=False)
    return model


def activate(model, chain_names: list[str], top: str | None) -> None:
    """Make ``top`` plus every frozen adapter active; only ``top`` keeps requires_grad."""
    names = ([top] if top else []) + list(chain_names)  # `top` first: resume loads into names[0]
    model.base_model.set_adapter(names)
    for param_name, param in model.named_parameters():
        if any(f".{n}." in param_name for n in chain_names):
            param.requires_grad_(False)
    if top:
        model.active_adapter = top


def load_ref(registry: Registry, ref: str, *, dtype=None, device_map=None, quantize: str | None = None):
    """A ready (eval-mode) model for any adapter ref or base name, its stacked chain loaded first."""
    from peft import PeftModel

    try:
        adapter = registry.resolve(ref)
    except (NotFoundError, UsageError):
        adapter = None
        base = registry.node(ref)  # a base name; raises NotFoundError for neither
    else:
        base = registry.base(adapter["base"])
    model = load_base_model(base, quantize=quantize, dtype=dtype, device_map=device_map)
    if adapter is None:
        return model.eval()
    chain = frozen_chain(registry, adapter)
    model = attach_frozen(model, chain)
    if isinstance(model, PeftModel):
        model.load_adapter(adapter["path"], adapter_name=TRAINED, is_trainable=False)
    else:
        model = PeftModel.from_pretrained(model, adapter["path"], adapter_name=TRAINED)
    activate(model, [adapter_name(a["ref"]) for a in chain], TRAINED)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
