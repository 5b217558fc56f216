"""The `sft` stage's settings: TRL SFTConfig's names, plus the shared LoRA and Trainer fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr.trl_stage import TrainRecipe


@dataclass
class SftConfig(TrainRecipe):
    """Supervised fine-tuning of a LoRA adapter (trl.SFTTrainer)."""

    packing: bool = field(default=False, metadata={
        "help": "Pack several short examples into each max_length sequence."})
    completion_only_loss: bool = field(default=None, metadata={
        "help": "Loss on the completion only for prompt/completion data (default: yes)."})
    assistant_only_loss: bool = field(default=False, metadata={
        "help": "Loss on assistant messages only (needs a chat template with generation marks)."})
