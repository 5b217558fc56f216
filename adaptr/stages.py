"""Stages and the headless core that runs them; the CLI and the TUI both call :func:`run_stage`.

A stage plugin registers a :class:`Stage`: a name, a config dataclass, and two functions:
``check(ctx)`` validates everything cheap (data, LoRA settings, CUDA) before anything is written,
and ``run(ctx)`` does the work and publishes through the :class:`StageContext`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from . import config as config_mod
from . import plugins, store
from .errors import AdaptrError, UsageError
from .registry import Registry, crash_point, now

MODES = ("continue", "merge", "stack")
MODE_RELATION = {"continue": "continued", "merge": "merged", "stack": "stacked"}


@dataclass
class Stage:
    """A training (or other) stage contributed by a plugin.

    ``inputs`` says what the stage starts from: ``"base"`` (``--base``), ``"parent"`` (``--from``)
    or ``"base_or_parent"``.
    """

    name: str
    config_class: type
    run: Callable[["StageContext"], None]
    check: Callable[["StageContext"], None] | None = None
    help: str = ""
    inputs: str = "base_or_parent"
    takes_data: bool = True
    plugin: str = ""


@dataclass
class Executor:
    """How a detached run's process is started: ``argv(run, options)`` returns the command."""

    name: str
    argv: Callable[[dict, dict], list[str]]
    help: str = ""
    plugin: str = ""


@dataclass
class StageRequest:
    """What the user asked for; JSON-serialisable so a detached process can rebuild it."""

    stage: str
    base: str | None = None
    parent: str | None = None
    mode: str = "continue"
    data: str | None = None
    eval_data: str | None = None
    eval_fraction: float | None = None
    name: str | None = None
    config: dict = field(default_factory=dict)
    quantize: str | None = None
    save_steps: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StageRequest":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Reporter(Protocol):
    def start(self, total: int | None, description: str) -> None: ...
    def update(self, step: int, metrics: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class LogReporter:
    """Plain lines on stderr: used by detached runs (their stderr is the run's log)."""

    def start(self, total, description):
        print(f"[adaptr] {description}: {total or '?'} steps", file=sys.stderr, flush=True)

    def update(self, step, metrics):
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
        print(f"[adaptr] step {step} {shown}".rstrip(), file=sys.stderr, flush=True)

    def message(self, text):
        print(f"[adaptr] {text}", file=sys.stderr, flush=True)

    def finish(self):
        pass


@dataclass
class StageContext:
    """Everything a stage needs, and the only way it writes to the registry."""

    registry: Registry
    stage: Stage
    request: StageRequest
    config: Any
    base: dict
    parent: dict | None = None
    run: dict | None = None
    reporter: Reporter = field(default_factory=LogReporter)
    warnings: list[str] = field(default_factory=list)
    _stop_requested: bool = False
    _last_progress_write: float = 0.0

    @property
    def mode(self) -> str:
        return self.request.mode

    @property
    def run_dir(self) -> Path:
        return Path(self.run["run_dir"])

    @property
    def base_path(self) -> Path | None:
        return Path(self.base["path"]) if self.base.get("path") else None

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.reporter.message(f"warning: {text}")

    def should_stop(self) -> bool:
        """True once ``adaptr cancel`` (SIGTERM) asked this run to stop: save and return."""
        return self._stop_requested

    def progress(self, step: int, total: int | None = None, metrics: dict | None = None) -> None:
        """Report progress; ``metrics`` (loss, ...) also go into the metrics table at ``step``."""
        metrics = metrics or {}
        self.reporter.update(step, metrics)
        if self.run is None:
            return
        if metrics:
            self.registry.add_metrics(self.run["id"], step, metrics)
        if metrics or time.monotonic() - self._last_progress_write > 1.0 or step == total:
            fields_ = {"progress_step": step}
            if total is not None:
                fields_["progress_total"] = total
            self.registry.update_run(self.run["id"], **fields_)
            self._last_progress_write = time.monotonic()

    def staging(self, prefix: str = "artifact"):
        """A temporary directory in the store (same filesystem, so publishing is a rename)."""
        return self.registry.store.staging(prefix)

    def save_checkpoint(self, step: int, staged: Path) -> dict:
        """Seal a checkpoint directory, move it into the run's checkpoints/, record it."""
        digest = store.seal(Path(staged))
        final = self.run_dir / "checkpoints" / f"step-{step:08d}"
        if final.exists():
            store.shutil.rmtree(final)
        self.registry.store.place(Path(staged), final)
        crash_point("checkpoint-placed")
        checkpoint = self.registry.record_checkpoint(self.run["id"], step, final, digest)
        plugins.pm.hook.checkpoint_saved(run=self.run, checkpoint=checkpoint)
        return checkpoint

    def default_name(self) -> str:
        return self.request.name or self.stage.name

    def lineage_parents(self, params: dict | None = None) -> list[tuple[dict, str, dict]]:
        """The edge to the parent implied by ``--from`` and ``--mode``."""
        if not self.parent:
            return []
        return [(self.parent, MODE_RELATION[self.mode], {"mode": self.mode, **(params or {})})]

    def publish_adapter(self, staged: Path, *, record: dict, metrics: dict | None = None,
                        parents: list[tuple[dict, str, dict]] | None = None,
                        name: str | None = None, base: str | None = None) -> dict:
        version = self.registry.publish_adapter(
            staged, name=name or self.default_name(), base=base or self.base["name"],
            stage=self.stage.name,
            parents=self.lineage_parents() if parents is None else parents,
            config=config_mod.to_dict(self.config), record=record, metrics=metrics,
            run_id=self.run["id"] if self.run else None)
        plugins.pm.hook.version_published(version=version)
        self.reporter.message(f"published {version['ref']}")
        return version

    def publish_base(self, staged: Path, *, name: str, parents, info: dict, record: dict) -> dict:
        base = self.registry.publish_base(staged, name=name, source=f"merge:{self.request.parent}",
                                          parents=parents, info=info, record=record)
        plugins.pm.hook.version_published(version=base)
        self.reporter.message(f"registered derived base {name}")
        return base


# -- building a context --------------------------------------------------------------------


def prepare(registry: Registry, request: StageRequest, reporter: Reporter | None = None) -> StageContext:
    """Resolve inputs and config and run the stage's checks; writes nothing."""
    stage = plugins.get_stage(request.stage)
    if request.mode not in MODES:
        raise UsageError(f"unknown --mode {request.mode!r}", f"use one of {', '.join(MODES)}")
    parent = registry.resolve(request.parent) if request.parent else None
    base = _resolve_base(registry, stage, request, parent)
    if stage.takes_data and not request.data:
        raise UsageError(f"stage {stage.name} needs --data FILE", "pass a JSONL, JSON, Parquet or CSV file")
    inherited = _inherited(stage.config_class, parent, request.config)
    cfg = config_mod.build(stage.config_class, inherited, request.config)
    ctx = StageContext(registry=registry, stage=stage, request=request, config=cfg, base=base,
                       parent=parent, reporter=reporter or LogReporter())
    if stage.check:
        stage.check(ctx)
    return ctx


def _resolve_base(registry: Registry, stage: Stage, request: StageRequest, parent: dict | None) -> dict:
    if stage.inputs == "parent" and not parent:
        raise UsageError(f"stage {stage.name} continues an adapter: pass --from REF",
                         "list adapter versions with `adaptr ls`")
    if stage.inputs == "base" and not request.base:
        raise UsageError(f"stage {stage.name} needs --base NAME", "list bases with `adaptr base ls`")
    if not parent:
        if not request.base:
            raise UsageError(f"stage {stage.name} needs --base NAME or --from REF",
                             "list bases with `adaptr base ls`")
        return registry.base(request.base)
    if request.base and request.base != parent["base"]:
        raise UsageError(
            f"{parent['ref']} was trained on base {parent['base']!r}, not {request.base!r}",
            f"drop --base, or pick an adapter trained on {request.base!r}")
    return registry.base(parent["base"])


def _inherited(config_class: type, parent: dict | None, given: dict) -> dict:
    """LoRA settings the user did not give, taken from the parent's recorded config."""
    if not parent:
        return {}
    keys = config_mod.group_keys(config_class, "lora")
    return {k: parent["config"][k] for k in keys if k in parent["config"] and k not in given}


# -- running -------------------------------------------------------------------------------


def run_stage(registry: Registry, request: StageRequest, *, reporter: Reporter | None = None,
              run_id: str | None = None, executor: str = "local", gpus: str | None = None) -> dict:
    """Check, record and execute one stage run in this process; return the final run row."""
    ctx = prepare(registry, request, reporter)
    if run_id is None:
        run = registry.create_run(stage=request.stage, request=request.to_dict(),
                                  config=config_mod.to_dict(ctx.config), executor=executor,
                                  gpus=gpus, status="running")
    else:
        run = registry.run(run_id)
    return execute(ctx, run)


def execute(ctx: StageContext, run: dict) -> dict:
    registry = ctx.registry
    ctx.run = registry.update_run(run["id"], status="running", pid=os.getpid(),
                                  host=socket.gethostname(), started_at=now(),
                                  config=config_mod.to_dict(ctx.config))
    previous = signal.getsignal(signal.SIGTERM)

    def request_stop(signum, frame):
        ctx._stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    plugins.pm.hook.run_started(run=ctx.run)
    status, error = "failed", None
    try:
        ctx.stage.run(ctx)
        status = "cancelled" if ctx.should_stop() else "succeeded"
    except AdaptrError as exc:
        error = str(exc)
        raise
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if isinstance(exc, KeyboardInterrupt):
            status = "cancelled"
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        ctx.run = registry.update_run(run["id"], status=status, error=error, ended_at=now())
        plugins.pm.hook.run_ended(run=ctx.run)
    return ctx.run

