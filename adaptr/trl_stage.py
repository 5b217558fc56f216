"""The public kit for a stage built on a TRL trainer: a plugin hands it its trainer and the rest.

A TRL stage plugin is a config dataclass (a :class:`TrainRecipe` with the trainer's own options)
and one :class:`TrlStage` naming the trainer class, its TRL config class, the dataset formats it
takes, and what is particular to it. adaptr does everything the stages share: data validated
before any model loads, the TRL config and the ``LoraConfig`` built and checked in ``check``
(every field of the TRL config class is accepted through ``--set`` and YAML), the base and its
parent loaded the right way for ``--mode continue|merge|stack``, callbacks feeding the registry,
checkpoints, exact resume, the post-training checks, the record and the lineage edge::

    from adaptr import hookimpl
    from adaptr.trl_stage import UNPAIRED_PREFERENCE, TrlStage

    KTO = TrlStage("kto", KtoConfig, trainer="trl:KTOTrainer", trainer_config="trl:KTOConfig",
                   formats=(UNPAIRED_PREFERENCE,), reference=True, help="...")

    @hookimpl
    def register_stages(register):
        register(KTO.stage())

Importing this module imports no torch: the trainer is named by ``"module:attribute"`` and
imported when a run needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .config import resolve_class

from .hf.data import (MESSAGES, PREFERENCE, PROMPT_COMPLETION, PROMPT_ONLY, TEXT, UNPAIRED_PREFERENCE,
                      DataFormat, LoadedData, read_rows)
from .hf.data import digest as data_digest
from .hf.data import load as load_data
from .hf.loading import load_tokenizer
from .hf.recipe import OWN, TrainRecipe
from .stages import Stage, StageContext

__all__ = ["DataFormat", "LoadedData", "MESSAGES", "OWN", "PREFERENCE", "PROMPT_COMPLETION", "PROMPT_ONLY", "TEXT",
           "TrainRecipe", "TrlStage", "UNPAIRED_PREFERENCE", "data_digest", "declared_choices", "load_data",
           "load_tokenizer", "read_rows", "resolve_class"]


@dataclass(frozen=True)
class TrlStage:
    """What a TRL-backed stage hands adaptr.

    Args:
        name: the stage name (``adaptr train NAME``).
        config_class: a :class:`TrainRecipe` subclass: the LoRA and Trainer options every TRL
            stage shares, plus the ones adaptr's CLI and TUI show for this trainer. A field
            with ``metadata={OWN: True}`` is the stage's own (read by its hooks, not handed to
            the TRL config); ``"repeatable": True`` makes a list field's option repeatable.
        trainer: the TRL trainer class, e.g. ``"trl:SFTTrainer"``.
        trainer_config: its config class, e.g. ``"trl:SFTConfig"``; every field of it can be set.
        formats: the dataset formats the trainer takes, tried in this order on the first row.
        reference: the trainer compares against a frozen reference policy (DPO, KTO): when
            continuing, the parent is it (TRL's ``ref`` adapter), recorded on the edge.
        kept_metrics: prefixes of logged metrics kept in the version's metrics (``rewards/``).
        check: ``check(ctx, plan)``: rules of this trainer that TRL itself checks only once the
            model is loaded or mid-training; raise an ``AdaptrError``. ``plan.args`` is the TRL
            config the trainer gets; what the check works out for the other hooks goes into
            ``plan.extra``.
        trainer_kwargs: ``trainer_kwargs(ctx, plan) -> dict``: further arguments for the
            trainer (GRPO's ``reward_funcs``); called when the run starts.
        record: ``record(ctx, plan) -> dict``: what this stage adds to the version's record.
    """

    name: str
    config_class: type
    trainer: str | type
    trainer_config: str | type
    formats: tuple[DataFormat, ...]
    help: str = ""
    reference: bool = False
    kept_metrics: tuple[str, ...] = ()
    check: Callable[[StageContext, Any], None] | None = None
    trainer_kwargs: Callable[[StageContext, Any], dict] | None = None
    record: Callable[[StageContext, Any], dict] | None = None
    inputs: str = "base_or_parent"

    def stage(self) -> Stage:
        """The :class:`adaptr.Stage` to register: adaptr's TRL machinery runs it."""
        return Stage(self.name, self.config_class, run=self._run, check=self._check, help=self.help,
                     inputs=self.inputs, trl=self, passthrough=self.trainer_config)

    def _check(self, ctx: StageContext):
        from .hf import training

        return training.check(ctx, self)

    def _run(self, ctx: StageContext) -> None:
        from .hf import training

        training.train(ctx, self)


def declared_choices(config_class: type, name: str) -> list[str]:
    """The values a TRL config field's help text lists as possible (```'sigmoid'```...), for
    checking them in ``check`` where TRL checks them only mid-training; empty if it lists none."""
    import re

    help_text = resolve_class(config_class).__dataclass_fields__[name].metadata.get("help", "")
    return re.findall(r"`'([A-Za-z0-9_]+)'`", help_text)
