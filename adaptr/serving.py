"""Which serving engines can serve a version as ``adaptr export REF DIR --target NAME`` writes it.

Every engine wants one PEFT LoRA on one base and reads it by rules of its own, taken from its own
source (docs/serving.md cites each file). Reads JSON and safetensors headers only: no torch, so
``adaptr show`` and the TUI can call it.

The export writes a version as it is stored when the engine reads that right; otherwise (a stacked
chain, or scalings an engine computes differently: rsLoRA, ``alpha_pattern``, ``rank_pattern``)
as one adapter with every scaling folded into ``lora_B`` (adaptr/concat.py), which all of them
read the same way.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import AdaptrError, UsageError
from .peftdir import base_weight_key
from .safetensors_meta import model_tensors, read_header
from .store import CONFIG_FILE, WEIGHTS_FILE

TARGETS = ("vllm", "llama.cpp", "lorax", "tgi")
# vllm/config/lora.py: MaxLoRARanks, the values `--max-lora-rank` accepts.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vllm/lora/peft_helper.py: the only modules_to_save it accepts (classification heads).
_VLLM_SAVED_HEADS = ("classifier", "score")
# vllm/lora/peft_helper.py _init_is_supported: inits that leave a plain LoRA behind.
_VLLM_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
_VLLM_UNSUPPORTED = {"lora_bias": "LoRA bias (lora_bias)", "alora_invocation_tokens": "Activated LoRA (aLoRA)",
                     "layer_replication": "layer_replication", "use_bdlora": "block-diagonal LoRA",
                     "use_qalora": "QALoRA"}
# lorax_server/models/flash_llama.py ADAPTER_LAYERS (Llama and Mistral list the same in LoRAX's docs).
_LORAX_LAYERS = {"LlamaForCausalLM": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                      "down_proj", "lm_head")}
_LORAX_LAYERS["MistralForCausalLM"] = _LORAX_LAYERS["LlamaForCausalLM"]
# text_generation_server/models/__init__.py: the adapter_layers TGI loads LoRA weights for.
_TGI_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj",
               "c_proj", "c_fc")
_CLOSE = 1e-9


@dataclass
class AdapterView:
    """What an engine reads from one adapter directory."""

    config: dict
    ranks: dict[str, int]          # module -> rank of its factors
    scales: dict[str, float]       # module -> the scaling PEFT applies
    embeddings: set[str]           # modules with lora_embedding_A/B factors
    extra: list[str]               # tensors that are not LoRA factors (DoRA magnitudes, full copies, biases)

    @property
    def max_rank(self) -> int:
        return max(self.ranks.values(), default=0)


@dataclass
class BaseView:
    architecture: str | None
    tied_lm_head: bool             # lm_head has no weight of its own: it is the input embedding


@dataclass
class Verdict:
    target: str
    servable: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    form: str = "as-is"            # "as-is" | "one-adapter": what `export --target` writes
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def view_of_dir(adapter_dir: Path) -> AdapterView:
    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    header = read_header(adapter_dir / WEIGHTS_FILE)
    from .hf.merge import lora_scale

    ranks, embeddings, extra = {}, set(), []
    for key, entry in sorted(header.items()):
        found = base_weight_key(key)
        if found is None:
            extra.append(key.removeprefix("base_model.model."))
            continue
        module, part = found[0].removesuffix(".weight"), found[1]
        if "lora_embedding_" in key:
            embeddings.add(module)
        if part == "A":
            ranks[module] = entry["shape"][0]
    scales = {m: lora_scale(config, m, r) for m, r in ranks.items()}
    return AdapterView(config, ranks, scales, embeddings, extra)


def view_of_plan(plan) -> AdapterView:
    """The adapter :func:`adaptr.concat.write_one_adapter` writes for ``plan``."""
    return AdapterView(plan.config, {m: plan.rank for m in plan.modules}, plan.scales, set(plan.embeddings), [])


def base_view(base: dict) -> BaseView:
    tied = False
    path = Path(base["path"]) if base.get("path") else None
    if path and (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        tied = bool(config.get("tie_word_embeddings")) and "lm_head.weight" not in model_tensors(path)
    return BaseView(base.get("architecture"), tied)


# -- the engines' rules ----------------------------------------------------------------------


def _is_base_copy(key: str) -> bool:
    """A frozen copy of a base weight, which PEFT saves beside an embedding LoRA
    (``save_embedding_layers``); vLLM and llama.cpp skip it, LoRAX and TGI leave it unused."""
    return key.endswith(".base_layer.weight")


def _is_dora(view: AdapterView) -> bool:
    return bool(view.config.get("use_dora")) or any("lora_magnitude_vector" in k for k in view.extra)


def check_vllm(view: AdapterView, base: BaseView) -> Verdict:
    """vllm/lora/peft_helper.py (PEFTHelper._validate_features, validate_legal) and
    vllm/lora/utils.py (parse_fine_tuned_lora_name)."""
    verdict, config = Verdict("vllm", True), view.config
    saved = [m for m in config.get("modules_to_save") or [] if m not in _VLLM_SAVED_HEADS]
    if saved:
        verdict.reasons.append(f"modules_to_save {saved}: vLLM accepts none (or a classifier/score head)")
    if _is_dora(view):
        verdict.reasons.append("DoRA: vLLM does not support DoRA")
    for key, what in _VLLM_UNSUPPORTED.items():
        if config.get(key):
            verdict.reasons.append(f"{what}: vLLM does not support it")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower() not in _VLLM_INITS:
        verdict.reasons.append(f"init_lora_weights={init}: vLLM refuses inits that change the base weights")
    if config.get("bias", "none") != "none":
        verdict.reasons.append(f"bias={config['bias']}: vLLM does not support adapter biases")
    others = [k for k in view.extra if "lora_magnitude_vector" not in k and not _is_base_copy(k)]
    if others and not saved:
        verdict.reasons.append(f"{others[0]} is not a LoRA weight (vLLM's parse_fine_tuned_lora_name refuses it)")
    if view.max_rank > VLLM_MAX_LORA_RANKS[-1]:
        verdict.reasons.append(f"rank {view.max_rank} is above vLLM's largest --max-lora-rank "
                               f"({VLLM_MAX_LORA_RANKS[-1]})")
    else:
        verdict.settings["max_lora_rank"] = next(r for r in VLLM_MAX_LORA_RANKS if r >= view.max_rank)
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        verdict.notes.append("rank_pattern/alpha_pattern: read by PEFTHelper.get_rank_and_scaling in "
                             "current vLLM; older releases ignore them")
    if view.embeddings or any(m.endswith("lm_head") for m in view.ranks):
        verdict.notes.append("LoRA on embeddings or lm_head: vLLM loads it only for models that declare "
                             "those modules (otherwise it reports unexpected target modules)")
    verdict.servable = not verdict.reasons
    return verdict


def _single_alpha_reasons(view: AdapterView, engine: str, *, rank_from_tensor: bool, rslora: bool) -> list[str]:
    """Engines that scale every module by one ``lora_alpha`` over the rank (of the tensor, or the
    config's ``r``), over its square root with rsLoRA where they read ``use_rslora``: each
    module's PEFT scaling must equal that."""
    alpha, config = view.config.get("lora_alpha", 8), view.config
    root = rslora and config.get("use_rslora")

    def expected(module: str) -> float:
        rank = view.ranks[module] if rank_from_tensor else config.get("r", 8)
        return alpha / (math.sqrt(rank) if root else rank)

    wrong = [m for m, s in view.scales.items() if abs(s - expected(m)) > _CLOSE * max(1.0, s)]
    if not wrong:
        return []
    if config.get("use_rslora") and not rslora:
        return [f"rsLoRA (lora_alpha/sqrt(r)): {engine} scales by lora_alpha/r"]
    what = "alpha_pattern" if config.get("alpha_pattern") else "rank_pattern"
    return [f"{what} gives {wrong[0]} its own scaling: {engine} applies one lora_alpha/r to every module"]


def check_llama_cpp(view: AdapterView, base: BaseView) -> Verdict:
    """convert_lora_to_gguf.py (get_tensors, modify_tensors) and src/llama-graph.cpp
    (build_lora_mm: scale = alpha / rank of lora_b)."""
    verdict = Verdict("llama.cpp", True)
    if _is_dora(view):
        verdict.reasons.append("DoRA: convert_lora_to_gguf.py stops at the lora_magnitude_vector tensors")
    full = [k for k in view.extra if "lora_magnitude_vector" not in k and ".base_layer.weight" not in k
            and "_layernorm" not in k and ".norm" not in k]
    if full:
        verdict.reasons.append(f"{full[0]} is not a lora_A/lora_B tensor: convert_lora_to_gguf.py stops "
                               "(full embedding or lm_head copies come from modules_to_save or new tokens)")
    verdict.reasons += _single_alpha_reasons(view, "llama.cpp", rank_from_tensor=True, rslora=False)
    if base.tied_lm_head and any(m.endswith("lm_head") for m in view.ranks):
        verdict.reasons.append("LoRA on lm_head of a base whose lm_head is its tied input embedding: "
                               "convert_lora_to_gguf.py refuses it")
    verdict.notes.append("the base architecture must be one convert_hf_to_gguf.py supports (not checked)")
    verdict.servable = not verdict.reasons
    return verdict


def _punica_verdict(target: str, view: AdapterView, layers: tuple[str, ...] | None, engine: str) -> Verdict:
    """LoRAX and TGI (adapters/lora.py): LoraConfig keeps r, lora_alpha and use_rslora only; the
    weights read are ``lora_A.weight``/``lora_B.weight`` of the layers the model adapts; anything
    else is logged as 'unused adapter weights' and left out."""
    verdict = Verdict(target, True)
    if _is_dora(view):
        verdict.reasons.append(f"DoRA: {engine} ignores the magnitude vectors, so it would serve another model")
    if view.embeddings:
        verdict.reasons.append(f"LoRA on embeddings ({sorted(view.embeddings)[0]}): {engine} does not load "
                               "lora_embedding_A/B")
    full = [k for k in view.extra if "lora_magnitude_vector" not in k and not _is_base_copy(k)]
    if full:
        verdict.reasons.append(f"{full[0]} is not a LoRA factor: {engine} leaves it unused")
    if layers is not None:
        skipped = sorted({m.rsplit(".", 1)[-1] for m in view.ranks if m not in view.embeddings}
                         - set(layers))
        if skipped:
            verdict.reasons.append(f"{engine} does not adapt {', '.join(skipped)} (it adapts {', '.join(layers)})")
    verdict.reasons += _single_alpha_reasons(view, engine, rank_from_tensor=False, rslora=True)
    verdict.servable = not verdict.reasons
    return verdict


def check_lorax(view: AdapterView, base: BaseView) -> Verdict:
    layers = _LORAX_LAYERS.get(base.architecture or "")
    verdict = _punica_verdict("lorax", view, layers, "LoRAX")
    if layers is None:
        verdict.notes.append(f"which layers LoRAX adapts for {base.architecture} is not checked")
    return verdict


def check_tgi(view: AdapterView, base: BaseView) -> Verdict:
    verdict = _punica_verdict("tgi", view, _TGI_LAYERS, "TGI")
    verdict.notes.append("TGI loads LoRA adapters only for the model classes it serves with flash attention "
                         "(not checked)")
    return verdict


CHECKS = {"vllm": check_vllm, "llama.cpp": check_llama_cpp, "lorax": check_lorax, "tgi": check_tgi}


# -- a registry version ------------------------------------------------------------------------


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise UsageError(f"unknown serving target {target!r}", f"use one of {', '.join(TARGETS)}")
    return target


def one_adapter_plan(registry, chain: list[dict]):
    """The plan that writes ``chain`` as one adapter, or the error that says why it cannot be."""
    from .hf.concat import plan_one_adapter

    base = registry.base(chain[-1]["base"])
    tensors = model_tensors(Path(base["path"])) if base.get("path") and Path(base["path"]).is_dir() else {}
    modules = {k.removesuffix(".weight") for k in tensors if k.endswith(".weight")}
    if base_view(base).tied_lm_head:
        modules.add("lm_head")
    try:
        return plan_one_adapter([Path(a["path"]) for a in chain], [a["ref"] for a in chain], modules), None
    except AdaptrError as exc:
        return None, exc


def servability(registry, adapter: dict, targets: tuple[str, ...] = TARGETS) -> dict[str, Verdict]:
    """For each target: can ``adaptr export REF DIR --target T`` write something it serves?"""
    from .hf.merge import merge_chain

    chain = merge_chain(registry, adapter)
    base = base_view(registry.base(adapter["base"]))
    plan, error = one_adapter_plan(registry, chain)
    raw = view_of_dir(Path(chain[0]["path"])) if len(chain) == 1 else None
    return {target: _verdict(check_target(target), chain, raw, plan, error, base) for target in targets}


def _verdict(target: str, chain: list[dict], raw: AdapterView | None, plan, error, base: BaseView) -> Verdict:
    """The stored adapter when the engine reads it right, else the one-adapter rewrite."""
    check = CHECKS[target]
    if raw is not None:
        verdict = check(raw, base)
        if verdict.servable or plan is None:
            return verdict
        rewritten = check(view_of_plan(plan), base)
        return _as_one_adapter(rewritten) if rewritten.servable else verdict
    if plan is None:
        return Verdict(target, False, [f"the stacked chain {' + '.join(a['ref'] for a in chain)} "
                                       f"cannot be one adapter: {error.message}"])
    return _as_one_adapter(check(view_of_plan(plan), base))


def _as_one_adapter(verdict: Verdict) -> Verdict:
    verdict.form = "one-adapter"
    return verdict


def report(registry, adapter: dict) -> dict:
    """``{target: verdict dict}`` for ``show --json``, or ``{"error": ...}`` when the version's
    files cannot be read (``show`` must still show the record)."""
    try:
        return {target: v.to_dict() for target, v in servability(registry, adapter).items()}
    except (AdaptrError, OSError, ValueError) as exc:
        return {"error": f"cannot tell: {getattr(exc, 'message', exc)}"}


def summary(reported: dict) -> str:
    """:func:`report` on one line: ``vllm yes, llama.cpp no (DoRA: ...), ...``."""
    if "error" in reported:
        return reported["error"]
    return ", ".join(f"{t} yes" if v["servable"] else f"{t} no ({v['reasons'][0]})" for t, v in reported.items())


def serve_command(target: str, ref: str, adapter_dir: Path, base: dict, base_dir: Path | None,
                  settings: dict) -> str:
    """A command line that serves the exported adapter (base from its Hub id or its directory)."""
    hub = base.get("source_kind") == "hub" and base_dir is None
    model = base["source"] if hub else str(base_dir or base["path"])
    revision = ["--revision", base["revision"]] if hub and base.get("revision") else []
    adapter_dir = str(adapter_dir)
    if target == "vllm":
        return shlex.join(["vllm", "serve", model, *revision, "--enable-lora", "--max-lora-rank",
                           str(settings.get("max_lora_rank", 16)), "--lora-modules", f"{ref}={adapter_dir}"])
    if target == "llama.cpp":
        source = ["--base-model-id", model] if hub else ["--base", model]
        return shlex.join(["python", "convert_lora_to_gguf.py", *source, "--outfile",
                           str(Path(adapter_dir) / f"{ref}.gguf"), adapter_dir])
    if target == "tgi":
        return f"LORA_ADAPTERS={shlex.quote(f'{ref}={adapter_dir}')} " + shlex.join(
            ["text-generation-launcher", "--model-id", model, *revision])
    return shlex.join(["lorax-launcher", "--model-id", model, *revision]) + (
        f"  # then request with adapter_source=local, adapter_id={adapter_dir}")
