"""The `merge` stage: an adapter chain into a derived base, or several adapters into a new one.

``--from`` names the (first) adapter. With ``into_base`` it and its stacked parents are merged
into its base, shard by shard; otherwise ``--from`` and ``adapters`` are combined by ``method``.
"""

from __future__ import annotations

from adaptr import UsageError, records

from . import weighted

_WEIGHTED_ONLY = ("method", "weights", "density")


def check(ctx) -> None:
    """Validate everything cheap before the run is recorded: nothing is written on failure."""
    cfg = ctx.config
    if cfg.into_base:
        given = [key for key in _WEIGHTED_ONLY if getattr(cfg, key) is not None]
        given += ["adapters"] if cfg.adapters else []
        if given:
            raise UsageError(f"--into-base merges one adapter chain; {', '.join(given)} are for combining adapters",
                             "drop them, or drop --into-base")
        from adaptr.merging import check_into_base

        name, base, chain, _, _ = check_into_base(ctx.registry, ctx.parent, ctx.request.name, cfg.dtype)
        ctx.request.name = name
        for node in [*chain, base]:
            ctx.use(node)
        for adapter in chain:
            if adapter.record.quantize:
                ctx.warn(f"{adapter['ref']} was trained with QLoRA; it merges onto the unquantized base")
        return
    refs = [ctx.parent["ref"], *cfg.adapters]
    plan = weighted.check_weighted(ctx.registry, refs, cfg.method, cfg.weights, cfg.density, ctx.request.name,
                                   cfg.seed)
    for node in [*plan.adapters, plan.base]:
        ctx.use(node)
    return plan


def run(ctx) -> None:
    if ctx.config.into_base:
        _run_into_base(ctx)
    else:
        _run_weighted(ctx)


def _run_into_base(ctx) -> None:
    from adaptr.merging import merge_adapter_into_base

    merge_adapter_into_base(ctx, ctx.parent, name=ctx.request.name, dtype=ctx.config.dtype)


def _run_weighted(ctx) -> None:
    plan = ctx.plan
    with ctx.staging("merge") as staged:
        lora_config = weighted.combine(plan, staged, reporter=ctx.progress_reporter())
        config = {**lora_config, "method": plan.method, "weights": plan.weights, "density": plan.density,
                  "seed": plan.seed}
        record = records.VersionRecord(
            producer="weighted-merge", libraries=records.library_versions(),
            merge=records.WeightedMerge(method=plan.method, weights=plan.weights, density=plan.density,
                                        seed=plan.seed, parents=[a["ref"] for a in plan.adapters]))
        ctx.publish_adapter(staged, name=plan.name, base=plan.base["name"], config=config, record=record,
                            parents=[(a, "merged", plan.edge_params(i)) for i, a in enumerate(plan.adapters)])
