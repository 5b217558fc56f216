"""A stage for the TUI tests whose config never changes: the launch form's snapshot uses it."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr import Stage, UsageError, hookimpl


@dataclass
class ToyConfig:
    r: int = field(default=8, metadata={"help": "LoRA rank.", "group": "lora"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha.", "group": "lora"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Step size.", "group": "optimization"})
    steps: int = field(default=20, metadata={"help": "How many steps to take.", "group": "optimization"})
    packing: bool = field(default=False, metadata={"help": "Pack short examples together."})
    schedule: str = field(default="linear", metadata={"help": "Learning-rate schedule.",
                                                       "choices": ["linear", "cosine", "constant"]})


def check(ctx) -> None:
    if ctx.config.steps <= 0:
        raise UsageError(f"steps must be positive, not {ctx.config.steps}", "set steps to 1 or more")


def run(ctx) -> None:
    raise UsageError("the toy stage only exists to be launched in tests")


@hookimpl
def register_stages(register):
    register(Stage("tuitoy", ToyConfig, run=run, check=check, inputs="base_or_parent", takes_data=False,
                   help="a stand-in stage for the TUI tests"))
