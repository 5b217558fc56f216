"""Weighted merges of adapters into a new adapter version, through PEFT's ``add_weighted_adapter``.

The base is never loaded: the model is built from its config with every weight a zero-stride view
of one scalar (no memory), which is all ``add_weighted_adapter`` needs, since it only combines the
adapters' own LoRA matrices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from adaptr import ConflictError, NotFoundError, UsageError, store

from .config import DENSITY_METHODS, METHODS, SAME_RANK_METHODS


@dataclass
class WeightedPlan:
    adapters: list[dict]
    configs: list[dict]
    base: dict
    method: str
    weights: list[float]
    density: float | None
    name: str
    seed: int = 0

    def edge_params(self, index: int) -> dict:
        params = {"method": self.method, "weight": self.weights[index]}
        if self.density is not None:
            params["density"] = self.density
        if self.method.startswith("dare"):
            params["seed"] = self.seed
        return params


def check_options(refs: list[str], method: str | None, weights: list[float] | None,
                  density: float | None, name: str | None) -> list[float]:
    """Checks that need no registry: method, counts, density, name. Returns the weights."""
    from adaptr import check_adapter_name

    if not method:
        raise UsageError("combining adapters needs --method", f"use one of {', '.join(METHODS)}")
    if method not in METHODS:
        raise UsageError(f"unknown merge method {method!r}", f"use one of {', '.join(METHODS)}")
    if len(refs) < 2:
        raise UsageError("a weighted merge needs at least two adapters",
                         "list them: `adaptr merge A B --method linear --name N`, "
                         "or merge one into its base with --into-base")
    weights = [1.0] * len(refs) if weights is None else list(weights)
    if len(weights) != len(refs):
        raise UsageError(f"{len(weights)} weight(s) for {len(refs)} adapters",
                         "give one weight per adapter, in the same order")
    bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)]
    if bad:
        raise UsageError(f"merge weight {bad[0]!r} is not a finite number", "write e.g. --weights 0.7,0.3")
    if not any(weights):
        raise UsageError("every merge weight is 0, so the merge would be empty", "give at least one weight other than 0")
    if density is not None and (isinstance(density, bool) or not isinstance(density, (int, float))):
        raise UsageError(f"--density {density!r} is not a number", "e.g. --density 0.5 (fraction of values kept)")
    if method in DENSITY_METHODS:
        if density is None:
            raise UsageError(f"method {method} needs --density", "e.g. --density 0.5 (fraction of values kept)")
        if not 0 < density <= 1:
            raise UsageError(f"--density {density} is outside (0, 1]", "e.g. --density 0.5")
    elif density is not None:
        raise UsageError(f"--density is not used by method {method}",
                         f"drop it, or use one of {', '.join(DENSITY_METHODS)}")
    if not name:
        raise UsageError("a weighted merge needs --name for the new adapter", "e.g. --name merged")
    check_adapter_name(name)
    return weights


def check_weighted(registry, refs: list[str], method: str | None, weights: list[float] | None,
                   density: float | None, name: str | None, seed: int = 0) -> WeightedPlan:
    """Every check of a weighted merge, before anything is written."""
    from adaptr.merging import merge_chain, read_adapter_config

    weights = check_options(refs, method, weights, density, name)
    adapters = [registry.resolve(ref) for ref in refs]
    if len({a["id"] for a in adapters}) != len(adapters):
        raise UsageError("an adapter is listed twice", "list each adapter once; weigh it with --weights")
    bases = {a["base"] for a in adapters}
    if len(bases) > 1:
        listing = ", ".join(f"{a['ref']} on {a['base']!r}" for a in adapters)
        raise ConflictError(f"the adapters were trained on different bases ({listing})",
                            "only adapters of one base can be combined")
    for adapter in adapters:
        chain = merge_chain(registry, adapter)
        if len(chain) > 1:
            raise ConflictError(f"{adapter['ref']} is stacked on {chain[-2]['ref']}, whose weights a weighted "
                                f"merge would drop", f"merge {adapter['ref']} into a base first (--into-base)")
    configs = [read_adapter_config(Path(a["path"]), a["ref"]) for a in adapters]
    _check_compatible(adapters, configs, method)
    base = registry.base(adapters[0]["base"])
    if not base.get("path") or not (Path(base["path"]) / "config.json").is_file():
        raise NotFoundError(f"base {base['name']!r} has no local config.json", "download the base first")
    return WeightedPlan(adapters, configs, base, method, weights, density, name, seed)


def _check_compatible(adapters: list[dict], configs: list[dict], method: str) -> None:
    refs = [a["ref"] for a in adapters]
    for ref, config in zip(refs, configs):
        if config.get("use_dora"):
            raise ConflictError(f"{ref} is a DoRA adapter; weighted merges would drop its magnitudes",
                                "merge it into a base with --into-base instead")
        if config.get("bias", "none") != "none":
            raise ConflictError(f"{ref} trains biases (bias={config['bias']}); a weighted merge would drop them",
                                "merge it into a base with --into-base instead")
    kinds = {type(c.get("target_modules")).__name__ for c in configs}
    if len(kinds) > 1:
        raise ConflictError("the adapters' target_modules mix a regex string and a list",
                            "PEFT cannot combine them; retrain one with the other's form")
    if method in SAME_RANK_METHODS:
        ranks = {(c.get("r"), json.dumps(c.get("rank_pattern") or {}, sort_keys=True)) for c in configs}
        if len(ranks) > 1 or any(c.get("rank_pattern") for c in configs):
            shown = ", ".join(f"{ref}: r={c.get('r')}" for ref, c in zip(refs, configs))
            raise ConflictError(f"method {method} needs adapters of one rank ({shown})",
                                "use --method cat or svd, which accept different ranks")
    owners: dict[str, str] = {}
    for ref, config in zip(refs, configs):
        for module in config.get("modules_to_save") or []:
            if module in owners:
                raise ConflictError(f"{owners[module]} and {ref} both train a full copy of {module!r}",
                                    "PEFT cannot combine modules_to_save of two adapters")
            owners[module] = ref


def _weightless_model(base_dir: Path):
    """The base's architecture with every tensor a zero-stride view of a scalar: no weights in memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for module in model.modules():
        for pname, param in list(module.named_parameters(recurse=False)):
            stub = torch.zeros((), dtype=torch.float32).expand(param.shape)
            setattr(module, pname, torch.nn.Parameter(stub, requires_grad=False))
        for bname, buffer in list(module.named_buffers(recurse=False)):
            module._buffers[bname] = torch.zeros((), dtype=buffer.dtype).expand(buffer.shape)
    return model


def combine(plan: WeightedPlan, out_dir: Path, reporter=None) -> dict:
    """Load each adapter under its own name, combine them with PEFT, save only the result."""
    import warnings

    with warnings.catch_warnings():  # transformers' deprecation chatter from inside PEFT
        warnings.simplefilter("ignore", FutureWarning)
        return _combine(plan, out_dir, reporter)


def _combine(plan: WeightedPlan, out_dir: Path, reporter=None) -> dict:
    import torch
    from peft import PeftModel

    names = [f"parent{i}" for i in range(len(plan.adapters))]
    if reporter:
        reporter.start(len(names) + 1, f"{plan.method} merge of {len(names)} adapters")
    model = PeftModel.from_pretrained(_weightless_model(Path(plan.base["path"])), plan.adapters[0]["path"],
                                      adapter_name=names[0])
    for step, (adapter, adapter_name) in enumerate(zip(plan.adapters[1:], names[1:]), start=1):
        model.load_adapter(adapter["path"], adapter_name=adapter_name)
        if reporter:
            reporter.update(step, {})
    torch.manual_seed(plan.seed)
    model.add_weighted_adapter(names, plan.weights, "combined", combination_type=plan.method,
                               density=plan.density)
    model.save_pretrained(str(out_dir), selected_adapters=["combined"], save_embedding_layers=False)
    saved = Path(out_dir) / "combined"  # PEFT puts non-default adapters in a subfolder
    for path in saved.iterdir():
        path.rename(Path(out_dir) / path.name)
    saved.rmdir()
    config_path = Path(out_dir) / store.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = plan.configs[0].get("base_model_name_or_path")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if reporter:
        reporter.update(len(names) + 1, {})
        reporter.finish()
    return config
