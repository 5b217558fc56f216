"""adaptr-loop: an example adaptr plugin that adds the stage `loop`.

This module holds hook implementations only. It is imported whenever adaptr loads its plugins
(`adaptr --help` included), so it imports nothing heavy: torch and friends load inside the stage's
``run``.
"""

from adaptr import Stage, hookimpl

from .config import LoopConfig
from .stage import check, run


@hookimpl
def register_stages(register):
    """Register the stage `loop`."""
    register(Stage(
        "loop", LoopConfig, run=run, check=check, inputs="base_or_parent",
        help="Train a LoRA adapter with a plain PyTorch loop (AdamW, clipping, a scheduler; no Trainer)."))
