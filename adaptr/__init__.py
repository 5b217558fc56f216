"""adaptr: a lifecycle manager for LoRA/PEFT adapters.

The public API for plugin authors and scripts. Importing it never imports torch.
"""

from __future__ import annotations

from .errors import AdaptrError, ConflictError, IntegrityError, MachineError, NotFoundError, UsageError
from .hookspecs import hookimpl
from .registry import Registry
from .stages import Executor, Stage, StageContext, StageRequest, run_stage
from .evals import EvalJob, EvalTarget, Evaluator

__version__ = "0.1.0"

__all__ = [
    "AdaptrError", "ConflictError", "EvalJob", "EvalTarget", "Evaluator", "Executor", "IntegrityError", "MachineError", "NotFoundError",
    "Registry", "Stage", "StageContext", "StageRequest", "UsageError", "hookimpl", "load",
    "run_stage", "__version__",
]


def load(ref: str, *, registry: Registry | str | None = None, **kwargs):
    """Return a ready model for any adapter ref or base name, its chain resolved and every
    artifact verified first (needs torch)."""
    from .hf.loading import load_ref

    reg = registry if isinstance(registry, Registry) else Registry.discover(registry)
    for needed in reg.needs(reg.node(ref)):
        reg.verified(needed)
    return load_ref(reg, ref, **kwargs)
