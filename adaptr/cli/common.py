"""Shared CLI plumbing: the lazily opened registry, JSON output, tables."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from ..registry import Registry


@dataclass
class State:
    registry_path: str | None = None
    debug: bool = False
    _registry: Registry | None = field(default=None, repr=False)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.discover(self.registry_path)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None


pass_state = click.make_pass_decorator(State)


def echo_json(value: Any) -> None:
    """Data goes to stdout; diagnostics go to stderr."""
    click.echo(json.dumps(value, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    """Entities and records as the JSON objects they are; anything else as text."""
    import dataclasses

    if hasattr(value, "to_json"):
        return value.to_json()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def echo_err(text: str) -> None:
    click.echo(text, err=True)


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


class RichReporter:
    """A rich progress bar on stderr (stdout stays for data) with the latest loss, if any; messages
    print above it. The CLI's one progress reporter (``adaptr.stages.Reporter``), for plugin commands too."""

    def __init__(self):
        self._progress = None
        self._task = None
        self._loss = ""

    def start(self, total, description):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False)
            self._progress.start()
        self._task = self._progress.add_task(description, total=total or None, loss="")

    def update(self, step, metrics):
        if self._progress is None or self._task is None:
            return
        if "loss" in metrics:
            self._loss = f"loss {metrics['loss']:.4f}"
        if "eval_loss" in metrics:
            self._loss += f" eval {metrics['eval_loss']:.4f}"
        self._progress.update(self._task, completed=step, loss=self._loss)

    def message(self, text):
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            click.echo(text, err=True)

    def finish(self):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
