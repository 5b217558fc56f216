"""A stacked chain of LoRA adapters written as ONE PEFT LoRA adapter on the same base.

Stacked adapters are all active at once, and PEFT adds their updates:
``W·x + Σᵢ sᵢ·Bᵢ·Aᵢ·x``. That sum is one LoRA update of rank ``Σ rᵢ``: stack the ``Aᵢ`` along the
rank axis, put ``sᵢ·Bᵢ`` side by side, and set ``lora_alpha = r`` so PEFT's own scaling is 1:

    A = [A₁; A₂; …]    B = [s₁B₁, s₂B₂, …]    B·A = Σ sᵢ·Bᵢ·Aᵢ

Each adapter's scaling ``sᵢ`` (``lora_alpha/r``, ``/√r`` with rsLoRA, ``alpha_pattern`` and
``rank_pattern`` per module) is folded into its ``Bᵢ``, so the result has one rank and one alpha
for every module, which every serving engine reads the same way. A module that some adapters do
not target gets zero rows and columns up to that rank (zeros add nothing).

Planning reads only JSON and safetensors headers (no torch), so every refusal comes before a
write; :func:`write_one_adapter` loads the tensors.

Refused, with the reason: DoRA (``m·(W+ΔW)/‖W+ΔW‖`` rescales each weight by a norm of the updated
weight, so two DoRA updates do not add), and adapters that save full tensors (``modules_to_save``
copies, trained biases): those replace a weight instead of adding to it, which no LoRA can say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..peftdir import PEFT_PREFIX
from ..safetensors_meta import read_header
from ..store import CONFIG_FILE, WEIGHTS_FILE
from .merge import group_adapter_keys, lora_scale, read_adapter_config

_NOT_ONE = "export it as layers (without --one-adapter/--target) or as one model with --merged"


@dataclass
class Piece:
    """One adapter's LoRA factors for one module."""

    adapter: int        # index into the chain, parent first
    a_key: str
    b_key: str
    rank: int
    scale: float


@dataclass
class OneAdapterPlan:
    adapter_dirs: list[Path]
    labels: list[str]
    modules: dict[str, list[Piece]]          # module path -> pieces, parent first
    embeddings: set[str] = field(default_factory=set)   # modules whose factors are lora_embedding_*
    rank: int = 0
    config: dict = field(default_factory=dict)           # the adapter_config.json to write

    @property
    def scales(self) -> dict[str, float]:
        return {module: 1.0 for module in self.modules}


def plan_one_adapter(adapter_dirs: list[Path], labels: list[str],
                     base_modules: set[str] | None = None) -> OneAdapterPlan:
    """Check that the chain (parent first) adds up to one LoRA and list the pieces; no writes.

    ``base_modules`` (the base's weight names without ``.weight``) lets ``target_modules`` be
    written as short names (``q_proj``) when those pick exactly the layers that carry factors.
    """
    plan = OneAdapterPlan([Path(d) for d in adapter_dirs], list(labels), {})
    configs = []
    for index, (adapter_dir, label) in enumerate(zip(plan.adapter_dirs, plan.labels)):
        config = read_adapter_config(adapter_dir, label)
        configs.append(config)
        header = read_header(adapter_dir / WEIGHTS_FILE)
        modules, full = group_adapter_keys(header, label)
        # A frozen copy of a base weight (PEFT saves one beside an embedding LoRA) changes nothing.
        full = {target: key for target, key in full.items() if not key.endswith(".base_layer.weight")}
        _refuse_non_additive(config, modules, full, label)
        for module, parts in sorted(modules.items()):
            plan.modules.setdefault(module, []).append(_piece(index, module, parts, header, config, label))
            if "eA" in parts:
                plan.embeddings.add(module)
    plan.rank = max(sum(p.rank for p in pieces) for pieces in plan.modules.values())
    plan.config = _one_config(configs[-1], plan, base_modules)
    return plan


def _refuse_non_additive(config: dict, modules: dict, full: dict, label: str) -> None:
    if config.get("use_dora") or any("m" in parts for parts in modules.values()):
        raise UsageError(f"{label} is a DoRA adapter: DoRA rescales each weight by the norm of the updated "
                         "weight, so its update does not add to others and no concatenated LoRA equals it",
                         _NOT_ONE)
    if full:
        names = ", ".join(sorted(full)[:3]) + (" ..." if len(full) > 3 else "")
        raise UsageError(f"{label} saves full tensors ({names}; modules_to_save or a trained bias): they "
                         "replace weights instead of adding to them, which a LoRA update cannot express",
                         _NOT_ONE)


def _piece(index: int, module: str, parts: dict, header: dict, config: dict, label: str) -> Piece:
    a_key, b_key = (parts.get("eA"), parts.get("eB")) if "eA" in parts or "eB" in parts else \
        (parts.get("A"), parts.get("B"))
    if a_key is None or b_key is None:
        raise UsageError(f"{label}: {module} has lora_A or lora_B missing", "the adapter is damaged")
    rank = header[a_key]["shape"][0]
    return Piece(index, a_key, b_key, rank, lora_scale(config, module, rank))


def _one_config(top: dict, plan: OneAdapterPlan, base_modules: set[str] | None) -> dict:
    """The top adapter's config with one rank, scaling 1, and the modules that carry factors.

    ``fan_in_fan_out`` stays the top adapter's: PEFT stores ``lora_A``/``lora_B`` the same way
    whatever it says, and picks the layout of each layer by its type (Conv1D or Linear).
    """
    names = sorted({module.rsplit(".", 1)[-1] for module in plan.modules})
    picked = {m for m in base_modules or () if m.rsplit(".", 1)[-1] in names}
    # PEFT matches a listed name as a suffix at a dot boundary: short names when they target
    # exactly the layers that carry factors, else the full module paths.
    targets = names if picked == set(plan.modules) else sorted(plan.modules)
    config = {**top, "r": plan.rank, "lora_alpha": plan.rank, "use_rslora": False, "use_dora": False,
              "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, "bias": "none",
              "layers_to_transform": None, "layers_pattern": None, "exclude_modules": None,
              "init_lora_weights": True, "lora_bias": False,
              "target_modules": targets}
    config.pop("trainable_token_indices", None)
    return config


def write_one_adapter(plan: OneAdapterPlan, out_dir: Path) -> dict:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``out_dir`` (fp32)."""
    import torch
    from safetensors.torch import load_file, save_file

    adapters = [load_file(str(d / WEIGHTS_FILE)) for d in plan.adapter_dirs]
    tensors = {}
    for module, pieces in sorted(plan.modules.items()):
        a_parts = [adapters[p.adapter][p.a_key].float() for p in pieces]
        b_parts = [adapters[p.adapter][p.b_key].float() * p.scale for p in pieces]
        missing = plan.rank - sum(p.rank for p in pieces)
        if missing:
            a_parts.append(a_parts[0].new_zeros((missing, a_parts[0].shape[1])))
            b_parts.append(b_parts[0].new_zeros((b_parts[0].shape[0], missing)))
        a, b = torch.cat(a_parts, dim=0).contiguous(), torch.cat(b_parts, dim=1).contiguous()
        if module in plan.embeddings:
            tensors[f"{PEFT_PREFIX}{module}.lora_embedding_A"] = a
            tensors[f"{PEFT_PREFIX}{module}.lora_embedding_B"] = b
        else:
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    (out_dir / CONFIG_FILE).write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
    return {"rank": plan.rank, "modules": len(plan.modules), "chain": plan.labels}
