"""The `resume` stage's settings: which run, which checkpoint, and whether it may be inexact."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ResumeConfig:
    """Continue run ``run`` from a checkpoint (``adaptr resume RUN``)."""

    run: str = field(default="", metadata={"help": "The run to continue."})
    checkpoint: int = field(default=None, metadata={
        "help": "The step whose checkpoint to load (default: the newest that verifies)."})
    inexact: bool = field(default=False, metadata={
        "help": "Allow changed data or config; the changes are recorded on the version."})
    overrides: dict = field(default_factory=dict, metadata={
        "help": "Config values to change (makes the resume inexact)."})
