"""The fields every TRL/PEFT stage shares: LoRA settings and the Trainer's own knobs.

Field names are TRL's and transformers' (``learning_rate``, ``per_device_train_batch_size``,
``lora_alpha``...) so a TRL user needs no new vocabulary. Fields in the ``"lora"`` group are
inherited from a parent adapter's recorded config when not given. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

LORA = "lora"
# LoRA settings that fix the adapter's tensors: a child continuing a parent must keep them.
STRUCTURAL_LORA_KEYS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias",
                        "modules_to_save")


def _lora(default, help_text: str, **valid):
    """A LoRA field; ``valid`` is its range (``min``, ``above``, ``choices``... see config.py)."""
    return field(default=default, metadata={"help": help_text, "group": LORA, **valid})


def _opt(default, help_text: str, **valid):
    return field(default=default, metadata={"help": help_text, **valid})


@dataclass
class TrainRecipe:
    """Settings common to the TRL-based stages (``sft``, ``dpo``)."""

    trainer_kind: ClassVar[str] = ""

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


def lora_kwargs(config: TrainRecipe) -> dict:
    """Keyword arguments for ``peft.LoraConfig`` from a stage config."""
    targets = config.target_modules or "all-linear"
    if isinstance(targets, list) and targets == ["all-linear"]:
        targets = "all-linear"
    return {
        "r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": targets, "use_rslora": config.use_rslora, "use_dora": config.use_dora,
        "bias": config.bias, "modules_to_save": config.modules_to_save, "task_type": "CAUSAL_LM",
    }


# Keys of TrainRecipe (and its subclasses) that are not TrainingArguments.
_NOT_TRAINING_ARGS = {"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora",
                      "bias", "modules_to_save"}


def training_kwargs(config: TrainRecipe) -> dict:
    """The config's TRL/transformers TrainingArguments keys and values (LoRA keys left out)."""
    from .. import config as config_mod

    return {k: v for k, v in config_mod.to_dict(config).items()
            if k not in _NOT_TRAINING_ARGS and v is not None}
