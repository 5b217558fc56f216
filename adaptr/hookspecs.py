"""Every extension point of adaptr, in one place.

Hooks take keyword arguments, so new arguments can be added without breaking plugins. The
``register_*`` hooks hand the plugin a callback owned by adaptr, which keeps duplicate detection
and its error wording in one place (the pattern of simonw/llm).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("adaptr")
hookimpl = pluggy.HookimplMarker("adaptr")


@hookspec
def register_stages(register: Callable[..., None]) -> None:
    """Register training stages: call ``register(stage)`` with a :class:`adaptr.Stage`."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``adaptr`` click group ``cli``."""


@hookspec
def register_executors(register: Callable[..., None]) -> None:
    """Register executors: call ``register(executor)`` with a :class:`adaptr.Executor`."""


@hookspec
def register_evaluators(register: Callable[..., None]) -> None:
    """Register evaluators: call ``register(evaluator)`` with an :class:`adaptr.Evaluator`."""


@hookspec
def run_started(run: dict) -> None:
    """Called in the run's process when a run starts; ``run`` is its registry row."""


@hookspec
def checkpoint_saved(run: dict, checkpoint: dict) -> None:
    """Called after a checkpoint is written, verified and recorded."""


@hookspec
def run_ended(run: dict) -> None:
    """Called when a run ends, whatever its status (succeeded, failed, cancelled)."""


@hookspec
def version_published(version: dict) -> None:
    """Called after a new adapter version or derived base is recorded; ``version`` is its record."""
