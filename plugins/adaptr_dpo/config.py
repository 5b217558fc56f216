"""The `dpo` stage's settings: TRL DPOConfig's names, plus the shared LoRA and Trainer fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr.trl_stage import TrainRecipe


@dataclass
class DpoConfig(TrainRecipe):
    """Direct preference optimisation of a LoRA adapter (trl.DPOTrainer)."""

    learning_rate: float = field(default=5e-5, metadata={
        "help": "Peak learning rate for AdamW (LoRA tolerates more than full fine-tuning).", "above": 0})
    beta: float = field(default=0.1, metadata={
        "help": "How far the policy may move from the reference; higher stays closer.", "above": 0})
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"], metadata={
        "help": "DPO loss(es): sigmoid, hinge, ipo, robust, apo_zero, ... (comma-separated to combine)."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Probability that a preference label is flipped (robust DPO, EXO).", "min": 0, "below": 0.5})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "help": "Compute the reference log-probs once before training instead of every step."})
