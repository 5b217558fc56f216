"""Training a LoRA adapter with a TRL trainer, the way adaptr records it: the machinery every
:class:`adaptr.trl_stage.TrlStage` shares. Nothing here knows one stage from another.

``check(ctx, spec)`` validates data, LoRA settings against the parent, the machine, and what the
mode needs, writing nothing, and returns the :class:`Plan`. ``train(ctx, spec)`` builds the model
and trainer (:func:`build_trainer`), trains, checks that only the adapter changed and publishes
the version. A resumed run has ``ctx.resume_from`` set: the model is rebuilt exactly as the first
time and the Trainer restores optimizer, scheduler, RNG and trainer state from the checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConflictError, IntegrityError, MachineError, UsageError
from .. import records
from ..records import library_versions, version_drift
from ..safetensors_meta import normalize_dtype
from ..stages import StageContext
from . import data as data_mod
from .recipe import STRUCTURAL_LORA_KEYS, lora_kwargs

@dataclass
class Plan:
    """Everything ``check`` worked out, reused by ``train`` (no second validation pass)."""

    spec: object                 # the stage's TrlStage
    mode: str | None
    train: data_mod.LoadedData
    train_rows: list[dict]
    eval_rows: list[dict] = field(default_factory=list)
    eval_source: dict | None = None
    frozen: list[dict] = field(default_factory=list)  # stacked adapters beneath, deepest first
    reference: str | None = None  # the reference policy (DPO, KTO), recorded on the edge
    trainer_class: type | None = None
    args: object = None          # the SFTConfig/DPOConfig the trainer gets (output_dir set at run)
    lora: object = None          # the LoraConfig of a new adapter (None when continuing)
    tensors: object = None       # preflight.TensorPlan: what the post-training checks expect
    keep_checkpoints: int | None = None  # save_total_limit: checkpoints kept (the last N + the best)
    extra: dict = field(default_factory=dict)  # what the stage's own check worked out, for its
    #                                           trainer_kwargs and record (GRPO: its reward functions)


# -- checking --------------------------------------------------------------------------------


def check(ctx: StageContext, spec) -> Plan:
    """Decide everything that needs no weights; raise an AdaptrError on bad input, write nothing."""
    from . import loading, preflight

    loading.check_quantize(ctx.request.quantize)
    mode = ctx.mode if ctx.parent else None
    preflight.refuse_unsupported(ctx.config, mode)
    model_base, untie = _check_parent(ctx, mode) if ctx.parent else (ctx.base, False)
    plan = _data_plan(ctx, spec, mode)
    if mode == "stack":
        preflight.refuse_stacking(plan.frozen, ctx.config)
    plan.trainer_class, plan.args = preflight.trainer_args(ctx, spec, bool(plan.eval_rows), _PENDING_DIR)
    plan.keep_checkpoints = preflight.checkpoint_policy(ctx.config)
    if spec.check:
        spec.check(ctx, plan)
    if mode != "continue":
        plan.lora = preflight.lora_config(ctx.config)
    preflight.check_tokenization(loading.load_tokenizer(ctx.base), ctx.config, plan.train)
    plan.tensors = preflight.tensor_plan(
        preflight.meta_model(model_base, untie=untie), plan.frozen, lora=plan.lora,
        parent_path=ctx.parent["path"] if mode == "continue" else None,
        lora_dropout=ctx.config.lora_dropout, fan_in_fan_out=ctx.config.fan_in_fan_out)
    return plan


_PENDING_DIR = "trainer"  # replaced by the run directory's trainer/ when the run starts


def _data_plan(ctx: StageContext, spec, mode: str | None) -> Plan:
    if ctx.request.eval_data and ctx.request.eval_fraction:
        raise UsageError("--eval-data and --eval-fraction both given", "pass one of them")
    train = data_mod.load(ctx.request.data, spec.formats)
    train_rows, eval_rows, eval_source = train.rows, [], None
    if ctx.request.eval_data:
        eval_data = data_mod.load(ctx.request.eval_data, spec.formats)
        eval_rows, eval_source = eval_data.rows, eval_data.describe()
    elif ctx.request.eval_fraction:
        train_rows, eval_rows = data_mod.split_eval(train.rows, ctx.request.eval_fraction, ctx.config.seed)
        eval_source = {"fraction": ctx.request.eval_fraction, "rows": len(eval_rows)}
    frozen = []
    if ctx.parent and mode == "continue":
        frozen = ctx.registry.stacked_beneath(ctx.parent)
    elif ctx.parent and mode == "stack":
        frozen = ctx.registry.stacked_beneath(ctx.parent) + [ctx.parent]
    reference = (ctx.parent["ref"] if ctx.parent else ctx.base["name"]) if spec.reference else None
    return Plan(spec=spec, mode=mode, train=train, train_rows=train_rows, eval_rows=eval_rows,
                eval_source=eval_source, frozen=frozen, reference=reference)


def _check_parent(ctx: StageContext, mode: str) -> tuple[dict, bool]:
    """Refuse a parent the mode cannot use. Returns the base the new adapter will train on (for
    --mode merge, the derived base, or the base it will be made from) and whether the merge
    unties the embeddings."""
    parent = ctx.parent
    model_base, untie = ctx.base, False
    if mode == "continue":
        given = {k: v for k, v in ctx.request.config.items() if k in STRUCTURAL_LORA_KEYS}
        from .. import config as config_mod

        given = {k: config_mod.coerce(type(ctx.config), k, v) for k, v in given.items()}
        recorded = parent.get("config", {})
        conflicts = [f"{k}={given[k]!r} (parent {parent['ref']} has {recorded[k]!r})"
                     for k in given if k in recorded and _norm(k, given[k]) != _norm(k, recorded[k])]
        if conflicts:
            raise ConflictError(
                f"LoRA settings conflict with the parent in --mode continue: {', '.join(conflicts)}",
                "drop them to continue the same adapter, or use --mode merge (or --mode stack) "
                "to train a new adapter with different LoRA settings")
    if mode == "merge":
        model_base, untie = _check_merge(ctx)
    drift = version_drift(parent.record.libraries, library_versions())
    if drift:
        ctx.warn(f"{parent['ref']} was trained with other library versions ({'; '.join(drift)})")
    return model_base, untie


def _check_merge(ctx: StageContext) -> tuple[dict, bool]:
    try:
        from .merge import check_into_base, default_base_name
    except ImportError:
        raise MachineError("--mode merge needs adaptr's merge support, which is not installed",
                           "use --mode continue or --mode stack") from None
    dtype = _merge_dtype(ctx.base)
    existing = ctx.registry.derived_base(ctx.parent, dtype)
    if existing:
        return ctx.use(existing), False
    name = ctx.registry.free_base_name(default_base_name(ctx.parent))
    return ctx.base, check_into_base(ctx.registry, ctx.parent, name, dtype)[3].untie


def _merge_dtype(base: dict) -> str | None:
    """Merge into the base's own dtype, so the new adapter trains on the same precision."""
    try:
        return normalize_dtype(base.get("dtype"))
    except UsageError:  # F64, or an integer type: train on bf16
        return "bf16"


def _norm(key: str, value):
    """A LoRA setting in one spelling: ``target_modules`` None (the default) is all-linear."""
    if key == "target_modules" and value in (None, "all-linear", ["all-linear"]):
        return "all-linear"
    if isinstance(value, list):
        return sorted(value)
    return value


# -- building --------------------------------------------------------------------------------


@dataclass
class Built:
    trainer: object
    model: object
    callback: object
    base: dict
    base_fingerprint: object  # checks.Fingerprint of the base as loaded
    watch: object             # callbacks.FingerprintCallback: the base as training began
    initial_adapter: dict
    parameters: dict


def build_trainer(ctx: StageContext, *, base: dict | None = None, output_dir: Path | None = None) -> Built:
    """Load base (and parents), wrap with the adapter to train, and build the TRL trainer."""
    import torch

    from . import checks, loading
    from .callbacks import FingerprintCallback, RegistryCallback

    plan = ctx.plan
    base = base or ctx.base
    _quiet_libraries()
    from transformers import set_seed

    set_seed(ctx.config.seed)  # LoRA init draws from the RNG: same seed, same adapter
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # the recorded peak covers loading and training
    tokenizer = loading.load_tokenizer(base)
    model = loading.load_base_model(base, quantize=ctx.request.quantize, for_training=True)
    loaded = checks.base_fingerprint(model, plan.tensors.owned)
    model = loading.wrap_for_training(
        model, plan.frozen, lora=plan.lora, lora_dropout=ctx.config.lora_dropout,
        parent_path=ctx.parent["path"] if plan.mode == "continue" else None)
    callback, watch = RegistryCallback(ctx, plan.keep_checkpoints), FingerprintCallback(plan.tensors.owned)
    plan.args.output_dir = str(output_dir or ctx.run_dir / "trainer")
    extra = plan.spec.trainer_kwargs(ctx, plan) if plan.spec.trainer_kwargs else {}
    trainer = plan.trainer_class(
        model=model, args=plan.args, train_dataset=data_mod.to_dataset(plan.train_rows),
        eval_dataset=data_mod.to_dataset(plan.eval_rows) if plan.eval_rows else None,
        processing_class=tokenizer, callbacks=[callback, watch], **extra)
    _after_trainer_init(trainer.model, plan)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # stdout carries data only; progress goes to the reporter
    trainer.remove_callback(ProgressCallback)
    initial = checks.adapter_state(trainer.model, loading.TRAINED)
    return Built(trainer=trainer, model=trainer.model, callback=callback, base=base,
                 base_fingerprint=loaded, watch=watch, initial_adapter=initial,
                 parameters=checks.parameter_counts(trainer.model))


def _after_trainer_init(model, plan: Plan) -> None:
    """Freeze TRL's ``ref`` copy (a DPO reference never trains) so the optimizer never holds it."""
    from .loading import of_adapter

    peft_config = getattr(model, "peft_config", {})
    if "ref" in peft_config:
        for name, param in model.named_parameters():
            if of_adapter(name, "ref"):
                param.requires_grad_(False)


def _quiet_libraries() -> None:
    import warnings

    import datasets
    import transformers

    # Deprecation notices about names TRL itself still uses say nothing the user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


# -- training --------------------------------------------------------------------------------


def train(ctx: StageContext, spec) -> dict | None:
    """Train, check, record and publish; return the new version (None if the run was stopped)."""
    resume_from = ctx.resume_from["path"] if ctx.resume_from else None  # a verified private copy
    if ctx.plan is None:  # a run prepared without its check (ranks > 0 check as well)
        ctx.plan = check(ctx, spec)
    plan = ctx.plan
    base = ctx.base
    derived = None
    if plan.mode == "merge":
        derived = _derived_base(ctx)
        base = derived
    started = time.monotonic()
    built = build_trainer(ctx, base=base)
    if ctx.should_stop():  # cancelled while loading: nothing trained, nothing to keep
        return None
    output = built.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.monotonic() - started
    if ctx.should_stop():
        ctx.reporter.message(f"stopped at step {built.callback.stopped_at}; checkpoint saved")
        return None
    eval_metrics = {}
    if plan.eval_rows:
        eval_metrics = built.trainer.evaluate()
        ctx.progress(built.trainer.state.global_step, built.trainer.state.max_steps,
                     metrics={k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))})
    version = _publish(ctx, plan, built, output, eval_metrics, wall, derived)
    from ..evals import record_training_eval

    record_training_eval(ctx, version)  # --eval-data results land in the evaluations table
    return version


def _derived_base(ctx: StageContext) -> dict:
    """The parent merged into its base: made once, reused by later runs (and by a resume)."""
    from .merge import default_base_name, merge_adapter_into_base

    dtype = _merge_dtype(ctx.base)
    existing = ctx.registry.derived_base(ctx.parent, dtype)
    if existing:
        ctx.reporter.message(f"training on derived base {existing['name']}")
        return ctx.use(existing)
    name = ctx.registry.free_base_name(default_base_name(ctx.parent))
    ctx.reporter.message(f"merging {ctx.parent['ref']} into derived base {name}")
    return merge_adapter_into_base(ctx, ctx.parent, name, dtype)


def _publish(ctx, plan: Plan, built: Built, output, eval_metrics: dict, wall: float, derived) -> dict:
    from . import checks
    from .loading import TRAINED

    model = built.model
    _check_base_unchanged(plan, built, checks.base_fingerprint(model, plan.tensors.owned))
    with ctx.staging("adapter") as staged:
        # Embedding base layers are not saved: adaptr never resizes the vocabulary, so each is
        # the base's own tensor, and PEFT's default would put a full copy into every adapter.
        model.save_pretrained(str(staged), selected_adapters=[TRAINED], save_embedding_layers=False)
        (staged / "README.md").unlink(missing_ok=True)  # PEFT's empty card; `adaptr push` writes one
        tensor_check = checks.check_adapter_file(staged, built.initial_adapter, plan.tensors.expected)
        record = _record(ctx, plan, built, output, eval_metrics, wall, tensor_check)
        kept = tuple(plan.spec.kept_metrics)
        metrics = {**{k: v for k, v in output.metrics.items() if isinstance(v, (int, float))},
                   **{k: v for k, v in built.callback.last_logs.items() if kept and k.startswith(kept)},
                   **{k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))}}
        return ctx.publish_adapter(staged, record=record, metrics=metrics,
                                   parents=_edges(ctx, plan, derived), base=built.base["name"])


def _check_base_unchanged(plan: Plan, built: Built, after) -> None:
    """The base as loaded = as training began (values) = as training ended (values and identity)."""
    begin = built.watch.begin or after
    changed = begin.changed(after)
    if changed:
        raise IntegrityError(f"base weights changed during training ({', '.join(changed[:3])})",
                             "the version was not published")
    changed = built.base_fingerprint.changed(begin, identity=False, ignore=plan.tensors.chain_owned)
    if changed:
        raise IntegrityError(f"base weights changed before training began ({', '.join(changed[:3])})",
                             "the version was not published")


def _edges(ctx: StageContext, plan: Plan, derived) -> list:
    if not ctx.parent:
        return []
    params = {"mode": plan.mode}
    if plan.reference:
        params["reference_policy"] = plan.reference
    if derived is not None:
        params["derived_base"] = derived["name"]
    edges = ctx.lineage_parents(params)
    if plan.mode == "continue":  # loading the child needs what the parent was stacked on
        edges += [(a, "stacked", {"mode": "continue", "inherited_from": ctx.parent["ref"]})
                  for a in plan.frozen]
    return edges


def logged_losses(log_history: list[dict]) -> list[list[float]]:
    """``[step, loss]`` as the Trainer logged them. After a resume its history holds the steps
    before the checkpoint too (restored from trainer_state.json), so the curve is the whole run."""
    return [[entry["step"], entry["loss"]] for entry in log_history if "loss" in entry and "step" in entry]


def _record(ctx, plan: Plan, built: Built, output, eval_metrics, wall, tensor_check) -> records.VersionRecord:
    from . import checks

    base = built.base
    tokens = built.callback.num_tokens
    runtime = output.metrics.get("train_runtime") or wall
    return records.VersionRecord(
        producer="training",
        trainer=f"{plan.trainer_class.__module__.split('.')[0]}.{plan.trainer_class.__name__}",
        mode=plan.mode or "new", parent=ctx.parent["ref"] if ctx.parent else None,
        reference_policy=plan.reference, frozen_adapters=[a["ref"] for a in plan.frozen],
        base=records.BaseSnapshot(
            name=base["name"], source=base.get("source"), revision=base.get("revision"),
            config_sha256=base.get("config_sha256"), tokenizer_sha256=base.get("tokenizer_sha256"),
            sha256=base.get("sha256"), weights_fingerprint=built.base_fingerprint.digest),
        data=records.DataSnapshot(**plan.train.describe(), train_rows=len(plan.train_rows)),
        eval_data=records.DataSnapshot(**plan.eval_source) if plan.eval_source else None,
        seed=ctx.config.seed, quantize=ctx.request.quantize,
        lora={k: v for k, v in lora_kwargs(ctx.config).items() if k != "task_type"},
        libraries=library_versions(), parameters=records.Parameters(**built.parameters),
        memory=records.Memory(**checks.memory_record(built.callback.peak_rss)),
        speed=records.Speed(train_runtime_s=runtime, wall_s=round(wall, 3), tokens=tokens,
                            tokens_per_second=round(tokens / runtime, 2) if runtime and tokens else None,
                            steps=built.trainer.state.global_step),
        first_logged=built.callback.first_logs, final_metrics=built.callback.last_logs,
        loss_curve=logged_losses(built.trainer.state.log_history),
        eval_metrics={k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))},
        checks={"base_weights_unchanged": True, **tensor_check},
        extra=plan.spec.record(ctx, plan) if plan.spec.record else {})
