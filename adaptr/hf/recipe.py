"""The fields every TRL/PEFT stage shares: LoRA settings and the Trainer's own knobs.

Field names are TRL's and transformers' (``learning_rate``, ``per_device_train_batch_size``,
``lora_alpha``...) so a TRL user needs no new vocabulary. Fields in the ``"lora"`` group are
inherited from a parent adapter's recorded config when not given. This module imports no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import ClassVar

LORA = "lora"
# A field with ``metadata={OWN: True}`` is the stage's own setting (GRPO's reward functions): its
# plugin reads it, and it is not handed to the TRL config class.
OWN = "own"
# LoRA settings that fix the adapter's tensors: a child continuing a parent must keep them.
STRUCTURAL_LORA_KEYS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias",
                        "modules_to_save", "rank_pattern", "alpha_pattern", "fan_in_fan_out")
# A target_modules entry with any of these is a regex (PEFT full-matches a string against each
# module's name); plain entries are names PEFT matches as suffixes.
_REGEX_CHARS = re.compile(r"[\\^$*+?()\[\]{}|]")


def _lora(default, help_text: str, **valid):
    """A LoRA field; ``valid`` is its range (``min``, ``above``, ``choices``... see config.py)."""
    return field(default=default, metadata={"help": help_text, "group": LORA, **valid})


def _opt(default, help_text: str, **valid):
    return field(default=default, metadata={"help": help_text, **valid})


_RUN_DIRECTORY = "adaptr keeps each run's files in its run directory (`adaptr runs` shows it)"
_ADAPTERS = "adaptr sets up the adapters: the parent, its stack and TRL's reference copy"

# TRL / TrainingArguments fields adaptr sets itself, and what to use instead.
OWNED_OPTIONS = {
    "output_dir": _RUN_DIRECTORY, "overwrite_output_dir": _RUN_DIRECTORY, "logging_dir": _RUN_DIRECTORY,
    "run_name": _RUN_DIRECTORY,
    "save_strategy": "use --save-steps N (0: never)", "save_steps": "use --save-steps N (0: never)",
    "save_only_model": "adaptr saves full checkpoints: `adaptr resume` needs the optimizer state",
    "resume_from_checkpoint": "use `adaptr resume RUN`",
    "load_best_model_at_end": "adaptr publishes the final weights; keep the best checkpoint with save_total_limit",
    "eval_strategy": "give --eval-data (or --eval-fraction) and eval_steps",
    "do_train": "adaptr trains", "do_eval": "give --eval-data", "do_predict": "use `adaptr eval`",
    "push_to_hub": "use `adaptr push REF`", "hub_model_id": "use `adaptr push REF --repo OWNER/NAME`",
    "hub_strategy": "use `adaptr push REF`", "hub_token": "use `adaptr push REF` (HF_TOKEN)",
    "hub_private_repo": "use `adaptr push REF --private`", "hub_always_push": "use `adaptr push REF`",
    "hub_revision": "use `adaptr push REF`",
    "disable_tqdm": "adaptr shows its own progress", "use_cpu": "adaptr trains on the GPUs it is given (--gpus)",
    "activation_checkpointing": "use gradient_checkpointing",
    "model_init_kwargs": "adaptr loads the base (--quantize for 4-bit)",
    "ref_model_init_kwargs": _ADAPTERS, "model_adapter_name": _ADAPTERS, "ref_adapter_name": _ADAPTERS,
    "force_use_ref_model": _ADAPTERS,
}


@dataclass
class TrainRecipe:
    """Settings common to the TRL-based stages: LoRA, and the Trainer options adaptr shows.

    Any other field of the stage's TRL config class is accepted too (``--set KEY=VALUE``, YAML)
    and lands in ``trainer_options``; the ones adaptr sets itself (``owned_options``) are refused.
    """

    owned_options: ClassVar[dict] = OWNED_OPTIONS

    # -- LoRA (peft.LoraConfig) ------------------------------------------------------------
    r: int = _lora(16, "LoRA rank (peft LoraConfig.r).", min=1)
    lora_alpha: int = _lora(32, "LoRA scaling numerator alpha (the update is scaled by alpha/r).", above=0)
    lora_dropout: float = _lora(0.05, "Dropout on the LoRA input; may change when continuing.", min=0, below=1)
    target_modules: list[str] = _lora(
        None, "Modules to adapt, comma-separated (e.g. q_proj,v_proj); default all-linear.")
    use_rslora: bool = _lora(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r).")
    use_dora: bool = _lora(False, "Weight-decomposed LoRA (DoRA).")
    bias: str = _lora("none", "Which biases to train: none, all or lora_only.",
                      choices=("none", "all", "lora_only"))
    modules_to_save: list[str] = _lora(
        None, "Extra modules trained in full and saved with the adapter (e.g. lm_head).")
    rank_pattern: dict = _lora(
        None, "Per-module ranks as JSON, e.g. {\"v_proj\": 4} (peft LoraConfig.rank_pattern).")
    alpha_pattern: dict = _lora(
        None, "Per-module alphas as JSON, e.g. {\"q_proj\": 32} (peft LoraConfig.alpha_pattern).")
    fan_in_fan_out: bool = _lora(
        None, "Weights stored (in, out), as GPT-2's Conv1D; default: PEFT decides by layer type.")
    init_lora_weights: bool | str = _lora(
        None, "LoRA init: true (default), false, gaussian...; pissa/olora/corda/loftq/eva are refused.")

    # -- optimisation (transformers TrainingArguments) -------------------------------------
    learning_rate: float = _opt(2e-4, "Peak learning rate for AdamW.", above=0)
    num_train_epochs: float = _opt(1.0, "Epochs over the training data (ignored if max_steps > 0).", above=0)
    max_steps: int = _opt(-1, "Total optimizer steps; overrides num_train_epochs when > 0.", min=1, also=(-1,))
    per_device_train_batch_size: int = _opt(8, "Training batch size per device.", min=1)
    per_device_eval_batch_size: int = _opt(8, "Evaluation batch size per device.", min=1)
    gradient_accumulation_steps: int = _opt(1, "Micro-batches accumulated per optimizer step.", min=1)
    lr_scheduler_type: str = _opt("linear", "Learning-rate schedule (linear, cosine, constant...).")
    warmup_steps: float = _opt(0, "Warm-up steps (an int), or a fraction of all steps (< 1).", min=0)
    weight_decay: float = _opt(0.0, "AdamW weight decay.", min=0)
    max_grad_norm: float = _opt(1.0, "Gradient clipping norm (0: no clipping).", min=0)
    optim: str = _opt("adamw_torch", "Optimizer name as transformers knows it.")
    seed: int = _opt(42, "Random seed (adapter init, data order, dropout).", min=0, max=2**32 - 1)
    logging_steps: int = _opt(10, "Log loss and metrics every N optimizer steps.", min=1)
    eval_steps: int = _opt(None, "Evaluate every N steps when eval data is given (default: at the end).", min=1)
    bf16: bool = _opt(None, "bf16 mixed precision; default on when the GPU supports it, off on CPU.")
    gradient_checkpointing: bool = _opt(False, "Recompute activations in backward to save memory.")
    max_length: int = _opt(1024, "Truncate tokenized sequences to this many tokens.", min=1)
    trainer_options: dict = field(default_factory=dict, metadata={
        "help": "Other fields of the stage's TRL config, set with --set KEY=VALUE or in --config YAML.",
        "hidden": True})

    def __post_init__(self):
        for key in ("rank_pattern", "alpha_pattern"):  # given as JSON text on the command line
            value = getattr(self, key)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise ValueError(f"{key}={value!r} is not JSON (write e.g. {{\"v_proj\": 4}})") from None
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{key} must map module names to numbers, not {value!r}")
            setattr(self, key, value or None)


def lora_kwargs(config: TrainRecipe) -> dict:
    """Keyword arguments for ``peft.LoraConfig`` from a stage config."""
    kwargs = {
        "r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": target_modules(config.target_modules), "use_rslora": config.use_rslora,
        "use_dora": config.use_dora, "bias": config.bias, "modules_to_save": config.modules_to_save,
        "rank_pattern": config.rank_pattern or {}, "alpha_pattern": config.alpha_pattern or {},
        "init_lora_weights": init_lora_weights(config.init_lora_weights), "task_type": "CAUSAL_LM",
    }
    if config.fan_in_fan_out is not None:
        kwargs["fan_in_fan_out"] = config.fan_in_fan_out
    return kwargs


def target_modules(targets) -> str | list[str]:
    """PEFT's ``target_modules``: ``all-linear``, a regex string, or a list of module names."""
    if not targets or targets == ["all-linear"] or targets == "all-linear":
        return "all-linear"
    if isinstance(targets, str):
        return targets
    if len(targets) == 1 and _REGEX_CHARS.search(targets[0]):
        return targets[0]
    return list(targets)


def init_lora_weights(value) -> bool | str:
    """``init_lora_weights`` as PEFT takes it (``true``/``false`` spelled as text become bools)."""
    if value is None:
        return True
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def training_kwargs(config: TrainRecipe) -> dict:
    """The config's TRL/transformers TrainingArguments keys and values (LoRA keys, and the
    stage's ``own`` fields, which its plugin reads itself, left out)."""
    from .. import config as config_mod

    left_out = set(config_mod.group_keys(type(config), LORA)) | {config_mod.OPTIONS_FIELD}
    left_out |= {f.name for f in config_mod.fields(type(config)) if f.metadata.get(OWN)}
    curated = {k: v for k, v in config_mod.to_dict(config).items() if k not in left_out and v is not None}
    return {**curated, **config.trainer_options}
