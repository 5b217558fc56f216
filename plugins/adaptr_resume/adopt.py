"""`adaptr adopt OUTPUT_DIR`: a run started with plain TRL (or the Trainer), taken in as an
interrupted run on a registered base, so that ``adaptr resume RUN`` continues it.

Everything is checked before anything is written: every ``checkpoint-N`` folder must be whole
(the adapter's safetensors as long as its header says, the optimizer, scheduler and RNG archives
intact, ``trainer_state.json`` at step N), its adapter must fit the base's shapes, and the
settings must agree with what the checkpoints prove. The Trainer's pickled ``training_args.bin``
is never opened (unpickling it could run any code); the settings come from the command line,
with the LoRA ones read from ``adapter_config.json`` and the schedule ones from
``trainer_state.json``, and are checked against the learning rates the run logged, the
scheduler's and optimizer's state (read with ``torch.load(weights_only=True)``, as the Trainer
itself reads them on resume) and the Trainer state.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from adaptr import ConflictError, IntegrityError, NotFoundError, StageRequest, UsageError
from adaptr import config as config_mod

from .stage import REQUIRED_STATE

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# LoRA settings as adapter_config.json names them, which are the stage config's names too.
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora",
             "modules_to_save", "rank_pattern", "alpha_pattern", "fan_in_fan_out")
# Trainer settings trainer_state.json records, as (state key, config key).
STATE_KEYS = (("max_steps", "max_steps"), ("logging_steps", "logging_steps"),
              ("train_batch_size", "per_device_train_batch_size"))


@dataclass
class Found:
    """One verified ``checkpoint-N`` folder of the output_dir."""

    step: int
    path: Path
    state: dict
    adapter: object  # adaptr.peftdir.AdapterDir


def plan(registry, output_dir, *, base: str, stage: str, data: str, name: str | None = None,
         config: dict | None = None, save_steps: int | None = None):
    """Check the output_dir and the settings; return (the prepared StageContext, the checkpoints).

    Writes nothing."""
    from adaptr import plugins, prepare_stage

    output_dir = Path(output_dir).expanduser()
    training = plugins.get_stage(stage)
    if training.trl is None:
        raise UsageError(f"stage {stage!r} does not train with a TRL trainer, so it has no run to adopt",
                         "adopt a run of a TRL stage, e.g. --stage sft")
    base_row = registry.base(base)
    found = [_verified(path, step, base_row) for step, path in _checkpoint_dirs(output_dir)]
    _same_adapter(found)
    newest = found[-1]
    settings = _settings(training, newest, dict(config or {}))
    request = StageRequest(stage=stage, base=base, data=data, name=name, config=settings,
                           save_steps=save_steps if save_steps is not None else newest.state.get("save_steps"))
    ctx = prepare_stage(registry, request)
    _check_schedule(ctx.plan.args, newest)
    return ctx, found


def adopt(registry, output_dir, **options) -> dict:
    """Register the run with copies of its checkpoints (sealed and recorded like adaptr's own)
    and its logged metrics, ending ``interrupted``; return the run.

    The run is recorded ``running`` under this process while the checkpoints are copied, each in
    a short transaction of its own (a large optimizer state is not copied under the write lock):
    if this process dies, the next look marks it interrupted with the checkpoints recorded so far,
    as any training run; an error marks it failed. Either can be resumed."""
    import os
    import socket

    from adaptr import record_run
    from adaptr.records import now

    ctx, found = plan(registry, output_dir, **options)
    newest, total = found[-1], found[-1].state.get("max_steps")
    run = record_run(ctx, status="running")
    ctx.run = registry.update_run(run["id"], pid=os.getpid(), host=socket.gethostname(), started_at=now())
    try:
        for checkpoint in found:
            with ctx.staging("adopt") as staged:
                shutil.copytree(checkpoint.path, staged, dirs_exist_ok=True)
                ctx.save_checkpoint(checkpoint.step, staged)
        for entry in newest.state.get("log_history") or []:
            if "step" in entry:
                registry.add_metrics(run["id"], entry["step"], {
                    k: v for k, v in entry.items() if k not in ("step", "epoch") and isinstance(v, (int, float))})
    except BaseException as exc:
        registry.update_run(run["id"], status="failed", ended_at=now(),
                            error=f"adopting stopped: {type(exc).__name__}: {exc}")
        raise
    source = Path(output_dir).expanduser().resolve()
    return registry.update_run(run["id"], status="interrupted", progress_step=newest.step, progress_total=total,
                               ended_at=now(), error=f"adopted from {source} at step {newest.step} of {total} "
                                                     "(a plain TRL run); continue it with `adaptr resume`")


# -- the checkpoints -----------------------------------------------------------------------


def _checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    if not output_dir.is_dir():
        raise NotFoundError(f"no directory {output_dir}", "pass the output_dir the Trainer wrote its checkpoints to")
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir()
                   if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name)))
    if not found:
        raise UsageError(f"{output_dir} holds no checkpoint-N folder",
                         "point at the Trainer's output_dir of a run saved with save_strategy='steps'")
    return found


def _verified(path: Path, step: int, base: dict) -> Found:
    """The checkpoint, after checking that it is whole and fits ``base``."""
    from adaptr import peftdir

    names = [p.name for p in path.iterdir()]
    for what, prefixes in {**REQUIRED_STATE, "adapter weights": ("adapter_model.safetensors",)}.items():
        if not any(n.startswith(prefixes) for n in names):
            raise IntegrityError(f"{path.name} holds no {what}", _DAMAGED_HINT)
    for archive in sorted(p for p in path.iterdir() if p.suffix in (".pt", ".pth")):
        _check_archive(archive)
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path.name}/{TRAINER_STATE} is not readable JSON ({exc})", _DAMAGED_HINT) from None
    if state.get("global_step") != step:
        raise IntegrityError(f"{path.name}/{TRAINER_STATE} is at step {state.get('global_step')}, not {step}",
                             _DAMAGED_HINT)
    try:
        adapter = peftdir.read_adapter_dir(path)
    except UsageError as exc:
        raise IntegrityError(f"{path.name}: {exc.message}", _DAMAGED_HINT) from None
    _check_base(path, adapter, base)
    return Found(step=step, path=path, state=state, adapter=adapter)


_DAMAGED_HINT = "the checkpoint is damaged or incomplete: copy it again, or remove that checkpoint-N folder"


def _check_archive(path: Path) -> None:
    """A torch.save file is a zip archive: every member's CRC must hold (a truncated or damaged
    copy fails), checked without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise IntegrityError(f"{path.parent.name}/{path.name} is damaged ({exc})", _DAMAGED_HINT) from None
    if bad is not None:
        raise IntegrityError(f"{path.parent.name}/{path.name} is damaged ({bad} fails its CRC)", _DAMAGED_HINT)


def _check_base(path: Path, adapter, base: dict) -> None:
    """The adapter fits the base's shapes, and names no other model than it."""
    from adaptr import peftdir, store

    named = adapter.config.get("base_model_name_or_path") or ""
    other = Path(named).expanduser() / "config.json" if named else None
    if other is not None and other.is_file() and store.sha256_file(other) != base["config_sha256"]:
        raise ConflictError(f"{path.name} was trained on {named}, another model than base {base['name']!r} "
                            "(their config.json differ)",
                            "adopt it with --base NAME of the model it was trained on (`adaptr base ls`)")
    if named and base.get("source_kind") == "hub" and "/" in named and not Path(named).exists() \
            and named != base["source"]:
        raise ConflictError(f"{path.name} was trained on {named}, not on base {base['name']!r} ({base['source']})",
                            "adopt it with --base NAME of the model it was trained on (`adaptr base ls`)")
    tensors = peftdir.base_tensors(base)
    if tensors is not None:
        try:
            peftdir.check_against_base(adapter, tensors, base["name"])
        except ConflictError as exc:
            raise ConflictError(f"{path.name}: {exc.message}",
                                "adopt it with --base NAME of the model it was trained on") from None


def _same_adapter(found: list[Found]) -> None:
    first = {k: found[0].adapter.config.get(k) for k in LORA_KEYS}
    for checkpoint in found[1:]:
        if {k: checkpoint.adapter.config.get(k) for k in LORA_KEYS} != first:
            raise ConflictError(f"{checkpoint.path.name} holds another LoRA adapter than {found[0].path.name}",
                                "an output_dir holds the checkpoints of one run; move the others away")


# -- the settings --------------------------------------------------------------------------


def _settings(training, newest: Found, given: dict) -> dict:
    """The stage config: the given values, the LoRA settings of adapter_config.json and the
    Trainer settings trainer_state.json records; a given value that contradicts them is refused."""
    given = {k: config_mod.coerce_any(training.config_class, training.passthrough, k, v) for k, v in given.items()}
    proven = {key: _lora_value(key, newest.adapter.config[key]) for key in LORA_KEYS
              if newest.adapter.config.get(key) not in (None, {}, [])}
    proven.update({key: newest.state[state_key] for state_key, key in STATE_KEYS
                   if newest.state.get(state_key) is not None})
    proven.update(_optimizer_settings(newest.path))
    for key, value in proven.items():
        if key in given and _norm(given[key]) != _norm(value):
            where = "adapter_config.json" if key in LORA_KEYS else "the checkpoint"
            raise ConflictError(f"{key}={given[key]!r} contradicts {where}, which says {value!r}",
                                f"drop {key}, or adopt the run it was given for")
    return {**proven, **given}


def _lora_value(key: str, value):
    if key == "target_modules" and isinstance(value, list):
        return sorted(value)
    return value


def _norm(value):
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _optimizer_settings(path: Path) -> dict:
    """The peak learning rate and weight decay, from the scheduler's and optimizer's state."""
    import torch

    out = {}
    try:
        scheduler = torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)
        optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        # The archives passed their CRCs: this is content torch's safe loader refuses.
        raise IntegrityError(f"{path.name}: the optimizer or scheduler state cannot be read safely "
                             f"({' '.join(str(exc).split())[:160]})", _DAMAGED_HINT) from None
    base_lrs = scheduler.get("base_lrs") if isinstance(scheduler, dict) else None
    if base_lrs:
        out["learning_rate"] = float(base_lrs[0])
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if groups:
        out["weight_decay"] = float(max(g.get("weight_decay", 0.0) for g in groups))
    return out


def _check_schedule(args, newest: Found) -> None:
    """The learning rates the run logged are the ones these settings give, step by step (the
    schedule type, warm-up and peak are otherwise known only to the pickled arguments)."""
    import torch
    from transformers import get_scheduler

    logged = [(e["step"], e["learning_rate"]) for e in newest.state.get("log_history") or []
              if "learning_rate" in e and "step" in e]
    if not logged:
        return
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    total = args.max_steps
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(total),
                              num_training_steps=total, scheduler_specific_kwargs=args.lr_scheduler_kwargs or {})
    expected, done = {}, 0
    for step, _ in logged:  # the rate logged at step s is the one step s used: s - 1 scheduler steps
        while done < step - 1:
            optimizer.step()
            scheduler.step()
            done += 1
        expected[step] = scheduler.get_last_lr()[0]
    for step, rate in logged:
        if not math.isclose(rate, expected[step], rel_tol=1e-6, abs_tol=1e-12):
            raise ConflictError(
                f"the run logged learning rate {rate:.6g} at step {step}; these settings give {expected[step]:.6g}",
                "pass the run's own lr_scheduler_type, warmup_steps and learning_rate (--set KEY=VALUE)")
