"""The `merge` stage: an adapter chain into a derived base, or several adapters into a new one.

``--from`` names the (first) adapter. With ``into_base`` it and its stacked parents are merged
into its base, shard by shard; otherwise ``--from`` and ``adapters`` are combined by ``method``.
"""

from __future__ import annotations

from adaptr import UsageError

from . import weighted

_WEIGHTED_ONLY = ("method", "weights", "density")


class _RunProgress:
    """Feed a helper's progress into the run (registry row + the context's reporter)."""

    def __init__(self, ctx):
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


def check(ctx) -> None:
    """Validate everything cheap before the run is recorded: nothing is written on failure."""
    cfg = ctx.config
    if cfg.into_base:
        given = [key for key in _WEIGHTED_ONLY if getattr(cfg, key) is not None]
        given += ["adapters"] if cfg.adapters else []
        if given:
            raise UsageError(f"--into-base merges one adapter chain; {', '.join(given)} are for combining adapters",
                             "drop them, or drop --into-base")
        from adaptr.hf.merge import check_into_base

        name, base, chain, _, _ = check_into_base(ctx.registry, ctx.parent, ctx.request.name, cfg.dtype)
        ctx.request.name = name
        for node in [*chain, base]:
            ctx.use(node)
        for adapter in chain:
            if (adapter.get("record") or {}).get("quantize"):
                ctx.warn(f"{adapter['ref']} was trained with QLoRA; it merges onto the unquantized base")
        return
    refs = [ctx.parent["ref"], *cfg.adapters]
    ctx.plan = weighted.check_weighted(ctx.registry, refs, cfg.method, cfg.weights, cfg.density,
                                       ctx.request.name, cfg.seed)
    for node in [*ctx.plan.adapters, ctx.plan.base]:
        ctx.use(node)


def run(ctx) -> None:
    if ctx.config.into_base:
        _run_into_base(ctx)
    else:
        _run_weighted(ctx)


def _run_into_base(ctx) -> None:
    from adaptr.hf.merge import merge_adapter_into_base

    base = merge_adapter_into_base(ctx.registry, ctx.parent, name=ctx.request.name, dtype=ctx.config.dtype,
                                   reporter=_RunProgress(ctx))
    _link_run(ctx, base["id"], "base")
    ctx.reporter.message(f"registered derived base {base['name']}")


def _run_weighted(ctx) -> None:
    plan = getattr(ctx, "plan", None) or weighted.check_weighted(
        ctx.registry, [ctx.parent["ref"], *ctx.config.adapters], ctx.config.method, ctx.config.weights,
        ctx.config.density, ctx.request.name, ctx.config.seed)
    with ctx.staging("merge") as staged:
        lora_config = weighted.combine(plan, staged, reporter=_RunProgress(ctx))
        config = {**lora_config, "method": plan.method, "weights": plan.weights, "density": plan.density,
                  "seed": plan.seed}
        record = {"method": plan.method, "weights": plan.weights, "density": plan.density, "seed": plan.seed,
                  "parents": [a["ref"] for a in plan.adapters], "library_versions": _versions()}
        version = ctx.registry.publish_adapter(
            staged, name=plan.name, base=plan.base["name"], stage=ctx.stage.name,
            parents=[(a, "merged", plan.edge_params(i)) for i, a in enumerate(plan.adapters)],
            config=config, record=record, run_id=ctx.run["id"] if ctx.run else None)
    _hook(version)
    ctx.reporter.message(f"published {version['ref']}")


def _link_run(ctx, node_id: int, kind: str) -> None:
    if ctx.run:
        ctx.registry.update_run(ctx.run["id"], output_kind=kind, output_id=node_id)


def _hook(version: dict) -> None:
    from adaptr import plugins

    plugins.pm.hook.version_published(version=version)


def _versions() -> dict:
    from adaptr.hf.merge import library_versions

    return library_versions()
