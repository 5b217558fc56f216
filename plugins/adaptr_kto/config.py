"""The `kto` stage's settings: TRL KTOConfig's names, plus the shared LoRA and Trainer fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr.trl_stage import TrainRecipe


@dataclass
class KtoConfig(TrainRecipe):
    """Kahneman-Tversky optimisation of a LoRA adapter on unpaired preferences (trl.KTOTrainer)."""

    learning_rate: float = field(default=5e-5, metadata={
        "help": "Peak learning rate for AdamW (LoRA tolerates more than full fine-tuning).", "above": 0})
    beta: float = field(default=0.1, metadata={
        "help": "How far the policy may move from the reference; higher stays closer.", "above": 0})
    loss_type: str = field(default="kto", metadata={
        "help": "kto, or apo_zero_unpaired (no KL estimate).", "choices": ("kto", "apo_zero_unpaired")})
    desirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the losses of desirable (label true) completions.", "above": 0})
    undesirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the losses of undesirable (label false) completions.", "above": 0})
