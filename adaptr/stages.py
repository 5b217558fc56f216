"""Stages and the headless core that runs them; the CLI and the TUI both call :func:`run_stage`.

A stage plugin registers a :class:`Stage`: a name, a config dataclass, and two functions:
``check(ctx)`` decides everything that needs no weights (data, settings, inputs, the machine)
before anything is written and returns the plan, and ``run(ctx)`` does the work, with that plan
as ``ctx.plan``, and publishes through the :class:`StageContext`. A stage on a TRL trainer is
made by :class:`adaptr.trl_stage.TrlStage`, which supplies both.
"""

from __future__ import annotations

import dataclasses
import json
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
from . import plugins, records, store
from .errors import AdaptrError, UsageError
from .refs import check_adapter_name
from .registry import Registry, crash_point, now, process_rank

MODES = ("continue", "merge", "stack")
CHECKPOINT_INFO = "adaptr-checkpoint.json"
MODE_RELATION = {"continue": "continued", "merge": "merged", "stack": "stacked"}


@dataclass
class Stage:
    """A training (or other) stage contributed by a plugin.

    ``inputs`` says what the stage starts from: ``"base"`` (``--base``), ``"parent"`` (``--from``)
    or ``"base_or_parent"``. ``command`` is the CLI command that runs it: ``"train"`` lists it
    under ``adaptr train`` (and the TUI's launch form); a stage with a command of its own
    (``resume``, ``merge``) names that instead.
    """

    name: str
    config_class: type
    run: Callable[["StageContext"], None]
    check: Callable[["StageContext"], Any] | None = None
    help: str = ""
    inputs: str = "base_or_parent"
    takes_data: bool = True
    command: str = "train"
    plugin: str = ""
    outputs: tuple[str, ...] = ("adapter",)
    """What the stage publishes. For a stage that publishes only an ``"adapter"``, ``--name`` is
    checked before anything else; a stage that may publish a ``"base"`` checks its own."""
    trl: Any = None
    """The :class:`adaptr.trl_stage.TrlStage` a TRL-backed stage was made from."""
    passthrough: Any = None
    """A library config class (or ``"module:attribute"``) whose every field the stage accepts too,
    into its config's ``trainer_options`` (see adaptr/config.py)."""


@dataclass
class Executor:
    """How a detached run's process is started: ``argv(run, options)`` returns the command.

    ``check(options)``, if given, refuses bad options before anything is written.

    An executor that hands the run to a scheduler (``slurm``) instead gives:

    - ``launch(run, options, env)``: start the run (``env`` is what its process must see) and
      return the fields to record on the run, e.g. ``{"job_id": "42", "host": None}``; raise
      :class:`adaptr.MachineError` when it cannot. ``argv`` is then not used.
    - ``poll(run)``: for a queued or running run, ``None`` while the scheduler still has it
      pending or running, else ``(status, error)`` to end the row with (one of
      :class:`adaptr.entities.RunStatus`'s values). ``jobs.refresh`` asks it instead of looking
      for the run's process on this machine.
    - ``cancel(run)``: ask the run to checkpoint and stop (``adaptr cancel``).

    ``journal=True``: the run's processes run on other hosts and must not open adaptr.db; they
    report through a journal in the run directory, which ``jobs.refresh`` ingests on the
    registry's host (adaptr/journal.py). Set ``ADAPTR_JOURNAL`` to the run directory in the
    environment of every process of the job.

    ``resolve(registry, options)``, if given, returns the options completed from settings the
    user keeps elsewhere (a profile beside the registry); it runs before ``check``, and what it
    returns is what the run records and starts with.
    """

    name: str
    argv: Callable[[dict, dict], list[str]] | None = None
    help: str = ""
    check: Callable[[dict], None] | None = None
    plugin: str = ""
    launch: Callable[[dict, dict, dict], dict] | None = None
    poll: Callable[[dict], tuple[str, str | None] | None] | None = None
    cancel: Callable[[dict], None] | None = None
    resolve: Callable[[Any, dict], dict] | None = None
    journal: bool = False


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
    plan: Any = None
    """What the stage's ``check`` returned: everything ``run`` needs that was decided up front."""
    resume_from: dict | None = None
    """Set by the ``resume`` stage: the verified checkpoint (``path``, ``step``, ``run``) to load."""
    resumes: str | None = None
    """Set by a stage that continues a recorded run (``resume``): its id. Recording this run
    claims that one, so of two resumes of one run only one ever goes on."""
    inputs: list[dict] = field(default_factory=list)
    """The verified versions and bases the run reads (see :meth:`use`)."""
    _stop_requested: bool = False
    _stop_status: str = "cancelled"
    _stop_reason: str | None = None
    _last_progress_write: float = 0.0
    _data_digests: dict | None = None

    @property
    def mode(self) -> str:
        return self.request.mode

    @property
    def run_dir(self) -> Path:
        return Path(self.run["run_dir"])

    @property
    def base_path(self) -> Path | None:
        return Path(self.base["path"]) if self.base.get("path") else None

    def use(self, node: dict) -> dict:
        """Verify ``node`` (an adapter or base dict) against its manifest and note it as an input.

        Every artifact a stage reads must come through here (or be among what ``prepare``
        passed through it: the parent, its stacked chain and the base). An input cannot be
        removed while the run is queued or running.
        """
        if all(n["id"] != node["id"] for n in self.inputs):
            self.registry.verified(node)
            self.inputs.append(node)
        return node

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.reporter.message(f"warning: {text}")

    @property
    def is_main_process(self) -> bool:
        """Only rank 0 of a multi-process run writes to the registry."""
        return process_rank() == 0

    def request_stop(self, status: str = "cancelled", reason: str | None = None) -> None:
        """Ask the stage to save and return (SIGTERM does this; so does another rank's request).

        The run then ends ``status`` with ``reason`` as its error: ``cancelled`` for a cancel,
        ``interrupted`` for a warning before a time limit or a preemption (SIGUSR1), after which
        the run is resumed from the checkpoint it saves.
        """
        if not self._stop_requested:
            self._stop_status, self._stop_reason = status, reason
        self._stop_requested = True

    def should_stop(self) -> bool:
        """True once ``adaptr cancel`` (SIGTERM) asked this run to stop: save and return."""
        return self._stop_requested

    def progress(self, step: int, total: int | None = None, metrics: dict | None = None) -> None:
        """Report progress; ``metrics`` (loss, ...) also go into the metrics table at ``step``."""
        metrics = metrics or {}
        self.reporter.update(step, metrics)
        if self.run is None or not self.is_main_process:
            return
        if metrics:
            self.registry.add_metrics(self.run["id"], step, metrics)
        if metrics or time.monotonic() - self._last_progress_write > 1.0 or step == total:
            fields_ = {"progress_step": step}
            if total is not None:
                fields_["progress_total"] = total
            self.registry.update_run(self.run["id"], **fields_)
            self._last_progress_write = time.monotonic()

    def progress_reporter(self) -> "Reporter":
        """A reporter for work the stage hands to a helper (a merge): it shows on the context's
        reporter and records progress on the run."""
        return _RunProgress(self)

    def staging(self, prefix: str = "artifact"):
        """A temporary directory in the store (same filesystem, so publishing is a rename)."""
        return self.registry.store.staging(prefix)

    def save_checkpoint(self, step: int, staged: Path, *, keep_last: int | None = None,
                        keep_step: int | None = None) -> dict | None:
        """Seal a checkpoint directory, move it into the run's checkpoints/, record it.

        The checkpoint also gets ``adaptr-checkpoint.json`` (stage, config, data digests), which
        ``adaptr resume`` compares with the run it continues. With ``keep_last``, the run then
        keeps only its newest ``keep_last`` checkpoints and the one at ``keep_step`` (the best):
        the newest, which a resume needs, is always among them. Other ranks than 0 return None.
        """
        if not self.is_main_process:
            return None
        (Path(staged) / CHECKPOINT_INFO).write_text(json.dumps(self.checkpoint_info(step), indent=1))
        digest = store.seal(Path(staged))
        final = self.run_dir / "checkpoints" / f"step-{step:08d}"
        if final.exists():
            store.shutil.rmtree(final)
        self.registry.store.place(Path(staged), final)
        crash_point("checkpoint-placed")
        checkpoint = self.registry.record_checkpoint(self.run["id"], step, final, digest)
        crash_point(f"checkpoint-recorded-{step}")
        plugins.pm.hook.checkpoint_saved(run=self.run, checkpoint=checkpoint)
        if keep_last:
            self.registry.prune_checkpoints(self.run["id"], keep_last, keep_step)
        return checkpoint

    def checkpoint_info(self, step: int) -> dict:
        from .records import library_versions

        return {"format": 1, "step": step, "stage": self.stage.name,
                "config": config_mod.to_dict(self.config), "data": self.data_digests(),
                "libraries": library_versions()}

    def data_digests(self) -> dict:
        """sha256 of each local data file the request names (``data``, ``eval_data``)."""
        if self._data_digests is None:
            self._data_digests = {}
            for key in ("data", "eval_data"):
                value = getattr(self.request, key)
                if value and Path(value).is_file():
                    self._data_digests[key] = store.sha256_file(Path(value))
        return self._data_digests

    def default_name(self) -> str:
        return self.request.name or self.stage.name

    def lineage_parents(self, params: dict | None = None) -> list[tuple[dict, str, dict]]:
        """The edge to the parent implied by ``--from`` and ``--mode``."""
        if not self.parent:
            return []
        return [(self.parent, MODE_RELATION[self.mode], {"mode": self.mode, **(params or {})})]

    def publish_adapter(self, staged: Path, *, record: dict, metrics: dict | None = None,
                        parents: list[tuple[dict, str, dict]] | None = None, name: str | None = None,
                        base: str | None = None, config: dict | None = None) -> dict | None:
        """Record ``staged`` as the next version of the run's output; ``config`` defaults to the
        stage config (a weighted merge records the new adapter's own)."""
        if not self.is_main_process:
            return None
        if self.resume_from:
            record = dataclasses.replace(records.version_record(record),
                                         resumed_from=_resume_record(self.resume_from))
        version = self.registry.publish_adapter(
            staged, name=name or self.default_name(), base=base or self.base["name"],
            stage=self.stage.name,
            parents=self.lineage_parents() if parents is None else parents,
            config=config_mod.to_dict(self.config) if config is None else config, record=record,
            metrics=metrics, run_id=self.run["id"] if self.run else None)
        self.reporter.message(f"published {version['ref']}")
        return version

    def publish_base(self, staged: Path, *, name: str, source: str, parents, info: dict,
                     record: dict) -> dict | None:
        """Record ``staged`` as the derived base ``name`` (made by this run: a merge)."""
        if not self.is_main_process:
            return None
        base = self.registry.publish_base(staged, name=name, source=source, parents=parents, info=info,
                                          record=record, run_id=self.run["id"] if self.run else None)
        self.reporter.message(f"registered derived base {name}")
        return base


class _RunProgress:
    def __init__(self, ctx: StageContext):
        self.ctx, self.total = ctx, None

    def start(self, total, description):
        self.total = total
        self.ctx.reporter.start(total, description)

    def update(self, step, metrics):
        self.ctx.progress(step, self.total)

    def message(self, text):
        self.ctx.reporter.message(text)

    def finish(self):
        self.ctx.reporter.finish()


def _resume_record(resume_from: dict) -> records.ResumedFrom:
    keys = ("run", "step", "inexact", "changes", "skipped")
    return records.ResumedFrom(**{k: resume_from[k] for k in keys if k in resume_from},
                               text=f"resumed from checkpoint {resume_from['step']} of run {resume_from['run']}")


# -- building a context --------------------------------------------------------------------


def prepare(registry: Registry, request: StageRequest, reporter: Reporter | None = None,
            run: dict | None = None) -> StageContext:
    """Resolve inputs and config, verify what will be read, and run the stage's checks.

    Writes nothing. ``run`` is the recorded run about to execute, when there is one already (a
    detached run's worker, every rank of a multi-process run); the checks see it as ``ctx.run``.
    """
    stage = plugins.get_stage(request.stage)
    _check_request(request)
    if request.name is not None and stage.outputs == ("adapter",):
        check_adapter_name(request.name)
    parent = registry.resolve(request.parent) if request.parent else None
    base = _resolve_base(registry, stage, request, parent)
    if stage.takes_data and not request.data:
        raise UsageError(f"stage {stage.name} needs --data FILE", "pass a JSONL, JSON, Parquet or CSV file")
    inherited = _inherited(stage.config_class, parent, request.config)
    cfg = config_mod.build(stage.config_class, inherited, request.config, passthrough=stage.passthrough)
    ctx = StageContext(registry=registry, stage=stage, request=request, config=cfg, base=base,
                       parent=parent, run=run, reporter=reporter or LogReporter())
    registry.store.check_writable()
    for node in registry.needs(parent or base):
        ctx.use(node)
    if stage.check:
        ctx.plan = stage.check(ctx)
    return ctx


def record_run(ctx: StageContext, *, executor: str = "local", gpus: str | None = None,
               status: str = "running") -> dict:
    """Record the run ``ctx`` was prepared for, with its inputs (and the run it resumes)."""
    return ctx.registry.create_run(stage=ctx.request.stage, request=ctx.request.to_dict(),
                                   config=config_mod.to_dict(ctx.config), executor=executor,
                                   gpus=gpus, status=status, inputs=[n["id"] for n in ctx.inputs],
                                   resumes=ctx.resumes)


def _check_request(request: StageRequest) -> None:
    """The request's own values (the stage config is checked by its fields' declared ranges)."""
    if request.mode not in MODES:
        raise UsageError(f"unknown --mode {request.mode!r}", f"use one of {', '.join(MODES)}")
    fraction = request.eval_fraction
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction < 1):
        raise UsageError(f"--eval-fraction {fraction!r} is not a fraction between 0 and 1",
                         "e.g. --eval-fraction 0.1 holds out a tenth of --data")
    steps = request.save_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise UsageError(f"--save-steps {steps!r} is not a number of steps", "e.g. --save-steps 100 (0: never)")
    for key in ("base", "parent", "data", "eval_data", "name", "quantize"):
        if getattr(request, key) is not None and not isinstance(getattr(request, key), str):
            raise UsageError(f"{key} must be text, not {getattr(request, key)!r}", f"check the recipe's {key}")


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
    run = registry.run(run_id) if run_id is not None else None
    ctx = prepare(registry, request, reporter, run=run)
    if run is None:
        run = record_run(ctx, executor=executor, gpus=gpus)
    return execute(ctx, run)


def execute(ctx: StageContext, run: dict) -> dict:
    registry = ctx.registry
    if not ctx.is_main_process:
        return _execute_other_rank(ctx, run)
    # A detached run keeps the pid its executor started (the process-group leader `adaptr
    # cancel` signals); a foreground run records its own.
    ctx.run = registry.update_run(run["id"], status="running", pid=run.get("pid") or os.getpid(),
                                  host=socket.gethostname(), started_at=now(),
                                  config=config_mod.to_dict(ctx.config))
    previous = _stop_on_signals(ctx)
    plugins.pm.hook.run_started(run=ctx.run)
    status, error = "failed", None
    try:
        ctx.stage.run(ctx)
        status, error = (ctx._stop_status, ctx._stop_reason) if ctx.should_stop() else ("succeeded", None)
    except AdaptrError as exc:
        error = str(exc)
        raise
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if isinstance(exc, KeyboardInterrupt):
            status = "cancelled"
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        ctx.run = registry.update_run(run["id"], status=status, error=error, ended_at=now())
        plugins.pm.hook.run_ended(run=ctx.run)
    return ctx.run


def _execute_other_rank(ctx: StageContext, run: dict) -> dict:
    """Ranks other than 0 train alongside rank 0 but never write to the registry."""
    ctx.run = run
    _stop_on_signals(ctx)
    ctx.stage.run(ctx)
    return run


PREEMPT_PREFIX = "asked to stop before its time limit or a preemption (SIGUSR1)"
PREEMPT_REASON = PREEMPT_PREFIX + ": saved a checkpoint"
TERM_REASON = "stopped by its scheduler (SIGTERM: a requeue, a preemption or scancel): saved a checkpoint"
CANCEL_MARKER = "cancel-requested"
"""Written into the run directory by ``adaptr cancel`` before it signals a run whose executor set
``ADAPTR_TERM_INTERRUPTS=1``: there SIGTERM without it comes from the scheduler, and ends the run
``interrupted`` (resumable), not ``cancelled``."""


def _stop_on_signals(ctx: StageContext) -> dict:
    """SIGTERM (``adaptr cancel``) stops the run as cancelled; SIGUSR1 (a scheduler's warning
    before a time limit or preemption, e.g. SLURM's ``--signal=USR1@90``) as interrupted, to be
    resumed. Both save a checkpoint first. Returns the handlers they replaced."""
    previous = {signal.SIGTERM: signal.getsignal(signal.SIGTERM),
                signal.SIGUSR1: signal.getsignal(signal.SIGUSR1)}
    def on_term(signum, frame):
        if os.environ.get("ADAPTR_TERM_INTERRUPTS") == "1" and not (ctx.run_dir / CANCEL_MARKER).exists():
            ctx.request_stop("interrupted", TERM_REASON)
        else:
            ctx.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, lambda signum, frame: ctx.request_stop("interrupted", PREEMPT_REASON))
    return previous
