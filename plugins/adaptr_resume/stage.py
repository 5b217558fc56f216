"""The `resume` stage: reopen a run from its newest checkpoint that verifies.

``check`` works everything out and writes nothing: the run to continue and the training stage it
ran, the checkpoint (newest first; ones that fail their manifest are skipped and reported), and
what changed since it was saved (data files, config), which is refused unless ``--inexact``.

``run`` links the new run to the old one, copies the checkpoint into a private staging directory
and verifies the copy against the recorded digest, so the pickled optimizer, scheduler and RNG
files the Trainer loads are exactly the bytes the manifest vouches for. Then it hands over to the
training stage with ``ctx.resume_from`` set; that stage passes the copy to
``trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from adaptr import (CHECKPOINT_INFO, RESUMABLE_STATUSES, AdaptrError, ConflictError, IntegrityError,
                    NotFoundError, RunStatus, StageRequest, UsageError, config as config_mod, plugins, store)

# What a checkpoint must hold to resume exactly, as prefixes of its top-level entries
# (transformers Trainer names; DeepSpeed keeps the optimizer under global_stepN/).
REQUIRED_STATE = {
    "optimizer state": ("optimizer", "global_step"),
    "scheduler state": ("scheduler",),
    "RNG state": ("rng_state",),
    "trainer state": ("trainer_state.json",),
}


def check(ctx):
    """Pick the checkpoint and the training stage; refuse what cannot be resumed exactly.

    Returns the training stage's own plan: the resumed run trains exactly as the first did."""
    registry, settings = ctx.registry, ctx.config
    if not settings.run:
        raise UsageError("the resume stage needs the run to continue", "run `adaptr resume RUN`")
    target = registry.run(settings.run)
    _check_resumable(registry, target, ctx.run)
    origin = _origin(registry, target)
    training = plugins.get_stage(origin["stage"])
    train_config = config_mod.build(training.config_class, target["config"], settings.overrides,
                                    passthrough=training.passthrough)
    request = dataclasses.replace(ctx.request, stage=training.name,
                                  config=origin["request"].get("config", {}))
    view = dataclasses.replace(ctx, stage=training, config=train_config, request=request)
    checkpoint, info, skipped = _pick_checkpoint(ctx, _lineage(registry, target), settings.checkpoint)
    changes = _changes(view, info, train_config)
    if changes and not settings.inexact:
        raise ConflictError(f"run {target['id']} cannot be resumed exactly: {'; '.join(changes)}",
                            "restore the original data and config, or pass --inexact to resume "
                            "anyway (the changes are recorded on the version)")
    _warn_library_drift(ctx, info)
    plan = training.check(view) if training.check else None
    ctx.config = train_config
    ctx.resumes = target["id"]
    ctx.resume_from = {"run": checkpoint["run_id"], "step": checkpoint["step"],
                       "path": checkpoint["path"], "sha256": checkpoint["sha256"],
                       "stage": training.name, "request": request.to_dict(),
                       "inexact": bool(changes), "changes": changes, "skipped": skipped}
    return plan


def run(ctx) -> None:
    """Record the link, load a verified private copy of the checkpoint, train on."""
    plan = ctx.resume_from
    training = plugins.get_stage(plan["stage"])
    if ctx.is_main_process:
        ctx.run = ctx.registry.update_run(ctx.run["id"], resumed_from_step=plan["step"])
    with ctx.staging("resume") as copy:
        shutil.copytree(plan["path"], copy, dirs_exist_ok=True)  # manifest included
        store.verify(copy, plan["sha256"])
        ctx.resume_from = {**plan, "path": str(copy)}
        ctx.stage, ctx.request = training, StageRequest.from_dict(plan["request"])
        ctx.reporter.message(f"resuming run {plan['run']} from its checkpoint at step {plan['step']}")
        training.run(ctx)


# -- which run, which checkpoint -----------------------------------------------------------


def _check_resumable(registry, target: dict, this_run: dict | None) -> None:
    """``this_run`` is the resume run itself when it is already recorded (a detached worker)."""
    run_id, status = target["id"], target["status"]
    if status == RunStatus.SUCCEEDED:
        made = f" and made {target['output_ref']}" if target["output_ref"] else ""
        raise ConflictError(
            f"run {run_id} succeeded{made}; only an interrupted, cancelled or failed run can be resumed",
            "to train further, start a new run with `adaptr train STAGE --from REF`")
    if status not in RESUMABLE_STATUSES:
        raise ConflictError(f"run {run_id} is still {status}",
                            f"wait for it to end, or stop it with `adaptr cancel {run_id}`")
    this_id = this_run["id"] if this_run else None
    later = registry.resumed_by(run_id, excluding=this_id)
    if later:
        raise ConflictError(f"run {run_id} was already resumed by run {later['id']} ({later['status']})",
                            f"see it with `adaptr runs`; resume {later['id']} if it stops")


def _origin(registry, run: dict) -> dict:
    """The training run a chain of resumes goes back to."""
    while run["stage"] == "resume":
        run = registry.run(run["resumed_from_run"] or run["request"]["config"]["run"])
    return run


def _lineage(registry, run: dict) -> list[dict]:
    """The run, then the runs it resumed, newest first: their checkpoints are all candidates."""
    chain = [run]
    while chain[-1]["stage"] == "resume":
        chain.append(registry.run(chain[-1]["resumed_from_run"] or chain[-1]["request"]["config"]["run"]))
    return chain


def _pick_checkpoint(ctx, chain: list[dict], step: int | None) -> tuple[dict, dict, list[dict]]:
    """The newest checkpoint (or the one at ``step``) that verifies; report the ones skipped."""
    target = chain[0]["id"]
    candidates = [c for run in chain for c in ctx.registry.checkpoints(run["id"])]
    candidates.sort(key=lambda c: c["step"], reverse=True)  # stable: a later run wins a tie
    if step is not None:
        steps = sorted({c["step"] for c in candidates})
        candidates = [c for c in candidates if c["step"] == step]
        if not candidates:
            raise NotFoundError(f"run {target} has no checkpoint at step {step}",
                                f"its checkpoints are at steps {', '.join(map(str, steps))}"
                                if steps else "it saved none")
    if not candidates:
        raise NotFoundError(f"run {target} saved no checkpoint to resume from",
                            "start it again with `adaptr train ... --save-steps N` to checkpoint as it trains")
    skipped = []
    for checkpoint in candidates:
        try:
            info = _verified_info(checkpoint)
        except AdaptrError as exc:
            skipped.append({"run": checkpoint["run_id"], "step": checkpoint["step"], "reason": exc.message})
            continue
        for item in skipped:
            ctx.warn(f"skipping checkpoint {item['step']} of run {item['run']}: {item['reason']}")
        return checkpoint, info, skipped
    raise IntegrityError(
        f"no checkpoint of run {target} verifies ({len(skipped)} checked; newest: {skipped[0]['reason']})",
        "the checkpoint files are damaged; start the run again")


def _verified_info(checkpoint: dict) -> dict:
    path = Path(checkpoint["path"])
    store.verify(path, checkpoint["sha256"])
    names = [p.name for p in path.iterdir()]
    for what, prefixes in REQUIRED_STATE.items():
        if not any(name.startswith(prefixes) for name in names):
            raise IntegrityError(f"checkpoint {checkpoint['step']} holds no {what} (saved with save_only_model?)")
    try:
        return json.loads((path / CHECKPOINT_INFO).read_text())
    except FileNotFoundError:
        raise IntegrityError(f"checkpoint {checkpoint['step']} has no {CHECKPOINT_INFO}",
                             "it was not saved by adaptr") from None


# -- what changed ----------------------------------------------------------------------------


def _changes(view, info: dict, train_config) -> list[str]:
    changes = []
    saved_data, current_data = info.get("data", {}), view.data_digests()
    for key in sorted(set(saved_data) | set(current_data)):
        if saved_data.get(key) != current_data.get(key):
            path = getattr(view.request, key, None) or "(none)"
            changes.append(f"{key} {path} changed (sha256 {_short(saved_data.get(key))} -> "
                           f"{_short(current_data.get(key))})")
    saved_config, current_config = info.get("config", {}), config_mod.to_dict(train_config)
    for key in sorted(set(saved_config) | set(current_config)):
        before, after = saved_config.get(key), current_config.get(key)
        if json.dumps(before, sort_keys=True) != json.dumps(after, sort_keys=True):
            changes.append(f"config {key} {before!r} -> {after!r}")
    return changes


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "missing"


def _warn_library_drift(ctx, info: dict) -> None:
    from adaptr.records import library_versions, version_drift

    drift = version_drift(info.get("libraries", {}), library_versions())
    if drift:
        ctx.warn(f"the checkpoint was saved with other library versions ({'; '.join(drift)})")
