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


def of_adapter(param_name: str, adapter: str) -> bool:
    """Whether a parameter belongs to ``adapter`` (``lora_A.NAME.weight``, or a ParameterDict
    entry such as an embedding's ``lora_embedding_A.NAME``)."""
    return f".{adapter}." in param_name or param_name.endswith(f".{adapter}")


def adapter_name(ref: str) -> str:
    """A PEFT adapter name for a ref (module-dict keys may not contain dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", ref)


def peft_names(refs: list[str]) -> list[str]:
    """Distinct PEFT adapter names for the refs of one chain (``a.b-v1`` and ``a_b-v1`` differ)."""
    names: list[str] = []
    for position, ref in enumerate(refs, start=1):
        name = adapter_name(ref)
        names.append(f"{name}_{position}" if name in names else name)
    return names


def peft_snippet(base_source: str, layers: list[tuple], revision: str | None = None) -> str:
    """Plain transformers + PEFT code that loads ``layers`` (``(path, ref)``, or ``(repo, ref,
    revision)`` for a Hub repo; deepest first) active together on the base: what adaptr.load
    does, for readers without adaptr."""
    names = peft_names([layer[1] for layer in layers])

    def pin(value: str | None) -> str:
        return f", revision={value!r}" if value else ""

    sources = [(layer[0], pin(layer[2] if len(layer) > 2 else None)) for layer in layers]
    lines = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
             f"model = AutoModelForCausalLM.from_pretrained({base_source!r}{pin(revision)})"]
    (path, pinned), name = sources[0], names[0]
    lines.append(f"model = PeftModel.from_pretrained(model, {path!r}{pinned}, adapter_name={name!r})")
    lines += [f"model.load_adapter({p!r}{pinned}, adapter_name={n!r})"
              for (p, pinned), n in zip(sources[1:], names[1:])]
    if len(layers) > 1:
        lines.append(f"model.base_model.set_adapter({names[::-1]!r})")
    return "\n".join(lines)


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


def wrap_for_training(model, frozen: list[dict], *, lora=None, parent_path: str | None = None,
                      lora_dropout: float | None = None):
    """The PeftModel to train: ``frozen`` attached beneath, then a new adapter from ``lora``, or
    the parent at ``parent_path`` made trainable (its own config, only the dropout changed)."""
    from peft import PeftConfig, PeftModel, get_peft_model

    chain_names = [adapter_name(a["ref"]) for a in frozen]
    model = attach_frozen(model, frozen)
    if parent_path is not None:
        lora = PeftConfig.from_pretrained(parent_path)
        lora.lora_dropout = lora_dropout if lora_dropout is not None else lora.lora_dropout
        lora.inference_mode = False
    if isinstance(model, PeftModel):
        model.add_adapter(TRAINED, lora)
    elif parent_path is not None:
        model = PeftModel.from_pretrained(model, parent_path, config=lora, is_trainable=True)
    else:
        model = get_peft_model(model, lora)
    if parent_path is not None and chain_names:
        _load_trainable(model, parent_path)
    if chain_names:
        activate(model, chain_names, TRAINED)
        keep_chain_active(model, chain_names)
    return model


def _load_trainable(model, path: str) -> None:
    """Load an adapter's saved tensors into the ``default`` adapter added for it."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    result = set_peft_model_state_dict(model, load_peft_weights(path), adapter_name=TRAINED)
    unexpected = [k for k in result.unexpected_keys if TRAINED in k or "lora_" in k]
    if unexpected:
        raise UsageError(f"{path}: tensors {unexpected[:3]} do not fit the model",
                         "the adapter was trained on another base")


def keep_chain_active(model, chain_names: list[str]) -> None:
    """Switching adapters (TRL does, for the DPO reference) must keep the frozen chain active.

    TRL's reference pass calls ``set_adapter("ref")`` and then ``set_adapter(previous)``; with
    stacked parents beneath, both must see the parents too, so the reference is parent (+ copy of
    the starting adapter) rather than the bare base.
    """

    def set_adapter(adapter_name, inference_mode=False):
        activate(model, chain_names, adapter_name)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(of_adapter(name, TRAINED) and not inference_mode
                                     and adapter_name == TRAINED)

    model.set_adapter = set_adapter


def activate(model, chain_names: list[str], top: str | None) -> None:
    """Make ``top`` plus every frozen adapter active; only ``top`` keeps requires_grad."""
    names = ([top] if top else []) + list(chain_names)  # `top` first: resume loads into names[0]
    model.base_model.set_adapter(names)
    for param_name, param in model.named_parameters():
        if any(of_adapter(param_name, n) for n in chain_names):
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
    chain = registry.stacked_beneath(adapter)
    model = attach_frozen(model, chain)
    if isinstance(model, PeftModel):
        model.load_adapter(adapter["path"], adapter_name=TRAINED, is_trainable=False)
    else:
        model = PeftModel.from_pretrained(model, adapter["path"], adapter_name=TRAINED)
    activate(model, [adapter_name(a["ref"]) for a in chain], TRAINED)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
