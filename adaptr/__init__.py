"""adaptr: a lifecycle manager for LoRA/PEFT adapters.

The public API for plugin authors and scripts. Importing it never imports torch.

The public modules are this one, ``adaptr.trl_stage`` (stages on a TRL trainer, dataset
formats), ``adaptr.merging`` (the streaming merge), ``adaptr.records`` (what versions record),
``adaptr.config`` (stage configs), ``adaptr.store`` (manifests, file names), ``adaptr.peftdir``
(PEFT adapter directories: read, check against a base), ``adaptr.serving``
(which engines can serve a version), ``adaptr.jobs`` (detached runs: submit, record,
refresh, cancel; for executors), ``adaptr.plugins`` (the plugin manager) and ``adaptr.cli``
(for plugin commands); built-in plugins import nothing else, as an
outside plugin would not (a test checks it; docs/architecture.md).
"""

from __future__ import annotations

from . import config, plugins, records, store  # adaptr.jobs loads when first imported
from .entities import ACTIVE_STATUSES, RESUMABLE_STATUSES, RunStatus
from .errors import AdaptrError, ConflictError, IntegrityError, MachineError, NotFoundError, UsageError
from .evals import EvalJob, EvalTarget, Evaluator
from .hookspecs import hookimpl
from .refs import check_adapter_name, check_name
from .registry import Registry
from .stages import CHECKPOINT_INFO, Executor, Stage, StageContext, StageRequest, record_run, run_stage
from .stages import prepare as prepare_stage

__version__ = "0.1.0"

__all__ = [
    "ACTIVE_STATUSES", "AdaptrError", "CHECKPOINT_INFO", "ConflictError", "EvalJob", "EvalTarget", "Evaluator", "Executor",
    "IntegrityError", "MachineError", "NotFoundError", "RESUMABLE_STATUSES", "Registry", "RunStatus", "Stage", "StageContext", "StageRequest",
    "UsageError", "check_adapter_name", "check_name", "config", "hookimpl", "jobs", "load", "plugins", "prepare_stage",
    "record_run", "records", "run_stage", "store", "__version__",
]


def load(ref: str, *, registry: Registry | str | None = None, **kwargs):
    """Return a ready model for any adapter ref or base name, its chain resolved and every
    artifact verified first (needs torch)."""
    from .hf.loading import load_ref

    reg = registry if isinstance(registry, Registry) else Registry.discover(registry)
    for needed in reg.needs(reg.node(ref)):
        reg.verified(needed)
    return load_ref(reg, ref, **kwargs)
