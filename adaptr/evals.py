"""Evaluators and the headless core that runs them; `adaptr eval`, training and the TUI call it.

An evaluator plugin registers an :class:`Evaluator`: a name, a settings dataclass, and two
functions. ``check(job)`` reads and validates the eval set (and anything else it can without a
model) into ``job.data``; ``run(job)`` loads each pending target's model, computes, and hands the
metrics to :meth:`EvalJob.add_result`. The core resolves refs and references, refuses targets
whose tokenizers differ, verifies artifacts, skips what is already recorded, and writes every
result of one job in one transaction at the end, so a failure records nothing.

Evaluations run as runs of the ``eval`` stage (registered here), so ``--detach``, ``adaptr runs``,
``logs`` and ``cancel`` work for them as for training. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import config as config_mod
from . import evalstore, plugins
from .errors import ConflictError, UsageError
from .evalstore import EvalKey
from .hookspecs import hookimpl
from .registry import Registry
from .stages import LogReporter, Reporter, Stage, StageContext, StageRequest

JOB_ATTR = "_adaptr_eval_job"


@dataclass
class Evaluator:
    """An evaluation contributed by a plugin.

    ``metrics`` names what ``run`` reports, each with True when higher is better. ``claims(row)``
    (optional) says whether a data file whose first row is ``row`` is in this evaluator's format,
    so ``adaptr eval`` can pick it without ``--evaluator``. ``uses_reference`` gives every target a
    reference model (its parent by default; the ``reference`` setting overrides it). ``version``
    is part of the settings digest: bump it when a change to ``run`` changes its results.
    """

    name: str
    settings_class: type
    check: Callable[["EvalJob"], None]
    run: Callable[["EvalJob"], None]
    metrics: dict[str, bool] = field(default_factory=dict)
    claims: Callable[[dict], bool] | None = None
    uses_reference: bool = False
    help: str = ""
    version: str = "1"
    plugin: str = ""


@dataclass
class EvalTarget:
    """One node to evaluate: a version or a base, its reference, and a result already recorded."""

    node: dict
    base: dict
    reference: dict | None = None
    recorded: dict | None = None


@dataclass
class EvalJob:
    """Everything an evaluator needs, and the only way it reports results."""

    registry: Registry
    evaluator: Evaluator
    settings: Any
    data_path: Path
    eval_set: dict
    targets: list[EvalTarget]
    force: bool = False
    data: Any = None
    """Set by the evaluator's ``check``: the validated rows (whatever ``run`` wants)."""
    reporter: Reporter = field(default_factory=LogReporter)
    on_progress: Callable[[int, int | None], None] | None = None
    should_stop: Callable[[], bool] = lambda: False
    results: dict[int, dict] = field(default_factory=dict)
    _done: int = 0
    _total: int | None = None

    @property
    def key(self) -> EvalKey:
        settings = config_mod.to_dict(self.settings)
        return EvalKey(self.evaluator.name, self.eval_set["sha256"],
                       evalstore.settings_digest(self.evaluator.name, self.evaluator.version, settings))

    @property
    def pending(self) -> list[EvalTarget]:
        """Targets to compute: those without a recorded result (all of them with ``force``)."""
        return [t for t in self.targets if self.force or t.recorded is None]

    @property
    def tokenizer_sha256(self) -> str | None:
        return self.targets[0].base.get("tokenizer_sha256") if self.targets else None

    def start(self, total: int | None, description: str | None = None) -> None:
        """Announce how many steps ``run`` will take (batches, rows: the evaluator's unit)."""
        self._done, self._total = 0, total
        self.reporter.start(total, description or f"eval {self.evaluator.name}")

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        if self.on_progress is not None:
            self.on_progress(self._done, self._total)
        else:
            self.reporter.update(self._done, {})

    def message(self, text: str) -> None:
        self.reporter.message(text)

    def add_result(self, target: EvalTarget, metrics: dict[str, float], *, outputs: list[dict] = (),
                   record: dict | None = None) -> None:
        """Keep one target's result; it is written with the others when ``run`` returns.

        ``outputs`` are generated texts, each ``{row, prompt, output, expected, score}``.
        """
        unknown = sorted(set(metrics) - set(self.evaluator.metrics))
        if unknown:
            raise ValueError(f"evaluator {self.evaluator.name} reported undeclared metrics {unknown}")
        self.results[target.node["id"]] = {"metrics": dict(metrics), "outputs": list(outputs),
                                           "record": dict(record or {})}


# -- planning: everything that can be known before a model loads ---------------------------


def plan(registry: Registry, refs: list[str], data: str | Path, *, evaluator: str | None = None,
         settings: dict | None = None, force: bool = False, reporter: Reporter | None = None) -> EvalJob:
    """Resolve, check and look up an evaluation of ``refs`` on ``data``; writes nothing."""
    if not refs:
        raise UsageError("no versions to evaluate", "name one or more refs: adaptr eval sft-v1 dpo-v1 --data FILE")
    from .hf import data as data_mod

    path = Path(data).expanduser().resolve()
    chosen = _choose_evaluator(path, evaluator, data_mod)
    cfg = config_mod.build(chosen.settings_class, settings or {})
    nodes = _unique_nodes(registry, refs)
    eval_set = {"name": path.name, "path": str(path), "sha256": data_mod.digest(path)}
    targets = [EvalTarget(node=node, base=_base_of(registry, node)) for node in nodes]
    job = EvalJob(registry=registry, evaluator=chosen, settings=cfg, data_path=path, eval_set=eval_set,
                  targets=targets, force=force, reporter=reporter or LogReporter())
    if chosen.uses_reference:
        for target in targets:
            target.reference = reference_of(registry, target.node, getattr(cfg, "reference", "parent"))
    _check_tokenizers(registry, job)
    chosen.check(job)
    for target in targets:
        target.recorded = evalstore.find(registry, target.node["id"], job.key)
    for target in job.pending:
        _verify(registry, target)
    return job


def _choose_evaluator(path: Path, name: str | None, data_mod) -> Evaluator:
    if name:
        return plugins.get_evaluator(name)
    rows, _ = data_mod.read_rows(path)
    if not rows:
        raise UsageError(f"{path} holds no rows", "add examples to the eval set")
    found = [e for e in plugins.evaluators().values() if e.claims and e.claims(rows[0])]
    if len(found) != 1:
        names = ", ".join(sorted(plugins.evaluators()))
        what = "matches several evaluators" if found else "is in no evaluator's format"
        raise UsageError(f"{path}: row 1 (keys {sorted(rows[0])}) {what}",
                         f"pass --evaluator NAME (installed: {names}); see docs/evaluations.md")
    return found[0]


def _unique_nodes(registry: Registry, refs: list[str]) -> list[dict]:
    nodes, seen = [], set()
    for ref in refs:
        node = registry.node(ref)
        if node["id"] not in seen:
            seen.add(node["id"])
            nodes.append(node)
    return nodes


def _base_of(registry: Registry, node: dict) -> dict:
    return node if node["kind"] == "base" else registry.base_by_id(node["base_id"])


def reference_of(registry: Registry, node: dict, setting: str | None) -> dict:
    """The reference a preference evaluation compares ``node`` against.

    ``parent`` (the default) is the reference policy DPO recorded on the node's edge, else its
    first parent, else (an adapter trained on a base) its base. Any other value is a ref.
    """
    if setting and setting != "parent":
        return registry.node(setting)
    for parent in node.get("parents") or []:
        recorded = (parent.get("params") or {}).get("reference_policy")
        if recorded:
            return registry.node(recorded)
    if node.get("parents"):
        return registry.node(node["parents"][0]["ref"])
    if node["kind"] == "adapter":
        return registry.base_by_id(node["base_id"])
    raise UsageError(f"base {node['ref']!r} has no parent to use as the reference",
                     "name one with --set reference=REF")


def _check_tokenizers(registry: Registry, job: EvalJob) -> None:
    """One evaluation compares numbers made with one tokenizer: targets and references share it."""
    first = job.targets[0]
    wanted = first.base.get("tokenizer_sha256")
    others = [(t.node, t.base) for t in job.targets[1:]]
    others += [(t.reference, _base_of(registry, t.reference)) for t in job.targets if t.reference]
    for node, base in others:
        have = base.get("tokenizer_sha256")
        if wanted and have and have != wanted:
            raise ConflictError(
                f"{node['ref']} is on base {base['name']!r}, whose tokenizer ({have[:12]}) differs from "
                f"the one of {first.node['ref']}'s base {first.base['name']!r} ({wanted[:12]})",
                "evaluate versions of different tokenizers separately; their numbers do not compare")


def _verify(registry: Registry, target: EvalTarget) -> None:
    """Everything the target's model (and its reference's) is built from verifies (verify before use)."""
    for node in [target.node] + ([target.reference] if target.reference else []):
        for needed in registry.needs(node):
            registry.verified(needed)


# -- running -------------------------------------------------------------------------------


def execute(job: EvalJob, *, run_id: str | None = None, source: str = "local") -> list[dict]:
    """Compute what is pending, record it in one transaction, return every target's result."""
    if job.pending:
        job.evaluator.run(job)
        if job.should_stop():
            return []
        missing = [t.node["ref"] for t in job.pending if t.node["id"] not in job.results]
        if missing:
            raise RuntimeError(f"evaluator {job.evaluator.name} returned no result for {', '.join(missing)}")
        evalstore.record(job.registry, [_row(job, t, run_id, source) for t in job.pending], replace=job.force)
    return [evalstore.find(job.registry, t.node["id"], job.key) for t in job.targets]


def _row(job: EvalJob, target: EvalTarget, run_id: str | None, source: str) -> dict:
    result = job.results[target.node["id"]]
    eval_set = {**job.eval_set, "rows": _rows(job), "format": getattr(job.data, "format", None)}
    return {"node_id": target.node["id"], "key": job.key, "eval_set": eval_set,
            "settings": config_mod.to_dict(job.settings), "metrics": result["metrics"],
            "higher_is_better": job.evaluator.metrics, "reference": target.reference,
            "tokenizer_sha256": target.base.get("tokenizer_sha256"), "outputs": result["outputs"],
            "record": {**result["record"], "evaluator_version": job.evaluator.version,
                       "libraries": _libraries()}, "run_id": run_id, "source": source}


def _rows(job: EvalJob) -> int | None:
    rows = getattr(job.data, "rows", job.data)
    return len(rows) if isinstance(rows, list) else None


def _libraries() -> dict:
    from .records import library_versions

    return library_versions()


# -- the `eval` stage: evaluations as runs (foreground, --detach, the TUI) -----------------


@dataclass
class EvalConfig:
    """What `adaptr eval` was asked: refs, evaluator, its settings, and whether to recompute."""

    refs: list[str] = field(default_factory=list, metadata={"help": "Versions or bases to evaluate."})
    evaluator: str = field(default=None, metadata={"help": "Evaluator (default: chosen by the data's format)."})
    settings: dict = field(default_factory=dict, metadata={"help": "The evaluator's settings (KEY=VALUE)."})
    force: bool = field(default=False, metadata={"help": "Recompute results already recorded."})


def eval_request(registry: Registry, refs: list[str], data: str | Path, *, evaluator: str | None = None,
                 settings: dict | None = None, force: bool = False) -> StageRequest:
    """The run request for an evaluation; ``--from``/``--base`` name its first target."""
    first = registry.node(refs[0]) if refs else None
    config = {"refs": list(refs), "evaluator": evaluator, "settings": dict(settings or {}), "force": force}
    request = StageRequest(stage="eval", data=str(data), config=config)
    if first is not None and first["kind"] == "adapter":
        request.parent = first["ref"]
    elif first is not None:
        request.base = first["ref"]
    return request


def job_of(ctx: StageContext) -> EvalJob:
    return getattr(ctx, JOB_ATTR, None) or _check_stage(ctx)


def _check_stage(ctx: StageContext) -> EvalJob:
    cfg = ctx.config
    job = plan(ctx.registry, cfg.refs, ctx.request.data, evaluator=cfg.evaluator, settings=cfg.settings,
               force=cfg.force, reporter=ctx.reporter)
    setattr(ctx, JOB_ATTR, job)
    return job


def _run_stage(ctx: StageContext) -> None:
    job = job_of(ctx)
    job.reporter = ctx.reporter
    job.on_progress = lambda done, total: ctx.progress(done, total)
    job.should_stop = ctx.should_stop
    results = execute(job, run_id=ctx.run["id"] if ctx.run else None)
    for result in results:
        shown = " ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if v is not None)
        ctx.reporter.message(f"{result['ref']}: {result['evaluator']} {shown}")


def record_training_eval(ctx: StageContext, version: dict | None) -> None:
    """After a stage published ``version``: evaluate it on ``--eval-data`` into the results table.

    Called by the TRL training loop; a failure only warns, the version is already published.
    """
    if not version or not ctx.request.eval_data or not ctx.is_main_process:
        return
    try:
        job = plan(ctx.registry, [version["ref"]], ctx.request.eval_data, reporter=ctx.reporter)
        execute(job, run_id=ctx.run["id"] if ctx.run else None, source="stage")
    except Exception as exc:  # the version stands; its evaluation can be run again by hand
        ctx.warn(f"--eval-data results were not recorded ({type(exc).__name__}: {exc}); "
                 f"run `adaptr eval {version['ref']} --data {ctx.request.eval_data}`")


@hookimpl
def register_stages(register):
    register(Stage("eval", EvalConfig, run=_run_stage, check=_check_stage, inputs="base_or_parent",
                   takes_data=True, command="eval",
                   help="Evaluate versions and bases and record the results (use `adaptr eval`)."))


def settings_fields(evaluator: Evaluator) -> list[dataclasses.Field]:
    return config_mod.fields(evaluator.settings_class)
