"""The `grpo` stage's settings: TRL GRPOConfig's names, plus the shared LoRA and Trainer fields,
plus the reward functions (the stage's own settings: GRPOTrainer takes them as arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr.trl_stage import OWN, TrainRecipe

REWARDS = "rewards"


def _reward(default, help_text: str, **valid):
    return field(default=default, metadata={"help": help_text, "group": REWARDS, OWN: True, **valid})


@dataclass
class GrpoConfig(TrainRecipe):
    """Group relative policy optimisation of a LoRA adapter (trl.GRPOTrainer)."""

    reward: list[str] = field(default=None, metadata={
        "help": "Reward function: a built-in (length, regex, think_format, repetition) or module:function "
                "(or path/to/file.py:function); NAME=WEIGHT weighs it.",
        "group": REWARDS, OWN: True, "repeatable": True, "metavar": "NAME[=WEIGHT]"})
    reward_pattern: str = _reward(None, "Regular expression the `regex` reward looks for in a completion.")
    reward_target_length: int = _reward(
        None, "Completion length in tokens the `length` reward prefers (default: half of max_completion_length).",
        min=1)
    learning_rate: float = field(default=1e-5, metadata={
        "help": "Peak learning rate for AdamW (LoRA tolerates more than full fine-tuning).", "above": 0})
    num_generations: int = field(default=8, metadata={
        "help": "Completions sampled per prompt (the group); the generation batch must be a multiple of it.",
        "min": 2})
    max_completion_length: int = field(default=256, metadata={
        "help": "Most tokens generated per completion.", "min": 1})
    temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of the generations.", "above": 0})
    beta: float = field(default=0.0, metadata={
        "help": "KL coefficient towards the reference (the parent when continuing; 0: no reference pass).",
        "min": 0})
    # GRPOConfig has no max_length (prompts are not truncated; completions stop at max_completion_length).
    max_length: int = field(default=None, metadata={"help": "Not a GRPO setting.", "hidden": True})
