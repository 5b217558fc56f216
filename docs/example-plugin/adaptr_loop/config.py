"""The `loop` stage's settings: one dataclass, from which adaptr derives the CLI options,
YAML config keys and the TUI's launch form."""

from __future__ import annotations

from dataclasses import dataclass, field

LORA = "lora"  # fields in this group are inherited from the parent adapter when not given
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt")  # transformers names that need no extra arguments


@dataclass
class LoopConfig:
    """Settings of a plain-PyTorch LoRA training run. Names follow TRL and transformers.

    Parameters:
        learning_rate: peak learning rate of AdamW.
        max_steps: optimizer steps to take.
        per_device_train_batch_size: rows per forward pass.
        gradient_accumulation_steps: forward passes per optimizer step.
        max_length: tokens kept per row; longer rows are truncated.
        max_grad_norm: gradients are clipped to this global norm.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up.
        lr_scheduler_type: a transformers schedule name (see ``SCHEDULERS``).
        logging_steps: report the loss every this many steps.
        save_steps: write a checkpoint every this many steps (0: never).
        seed: seed for weights, shuffling and dropout.
        bf16: autocast forward passes to bfloat16.
        r, lora_alpha, lora_dropout, target_modules: the LoRA adapter's shape; inherited from
            the parent with ``--from``, and refused if they differ from it.
    """

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate of AdamW."})
    max_steps: int = field(default=100, metadata={"help": "Number of optimizer steps."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rows per forward pass."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forward passes accumulated into each optimizer step."})
    max_length: int = field(default=512, metadata={"help": "Tokens kept per row (longer rows are truncated)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this global norm."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Steps of linear learning-rate warm-up."})
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": f"Learning-rate schedule: {', '.join(SCHEDULERS)}."})
    logging_steps: int = field(default=1, metadata={"help": "Report the loss every this many steps."})
    save_steps: int = field(default=50, metadata={"help": "Save a checkpoint every this many steps (0: never)."})
    seed: int = field(default=42, metadata={"help": "Random seed for initialisation, shuffling and dropout."})
    bf16: bool = field(default=False, metadata={"help": "Autocast forward passes to bfloat16 (weights stay float32)."})
    r: int = field(default=8, metadata={"help": "LoRA rank.", "group": LORA})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (alpha / r).", "group": LORA})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input.", "group": LORA})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names to adapt, comma-separated, or all-linear.", "group": LORA})

    def __post_init__(self):
        # adaptr turns a ValueError raised here into a one-line usage error.
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        for name in ("save_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be positive")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULERS)}, "
                             f"got {self.lr_scheduler_type!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
