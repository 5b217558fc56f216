"""`adaptr merge` and `adaptr export`: thin click commands over the merge stage and the exporter."""

from __future__ import annotations

from pathlib import Path

import click

from adaptr import StageRequest, UsageError, run_stage
from adaptr.cli import RichReporter, echo_json, pass_state
from adaptr.serving import TARGETS, check_target

from .config import DTYPES, METHODS


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights {text!r} is not a comma-separated list of numbers",
                         "write e.g. --weights 0.7,0.3") from None


@click.command("merge")
@click.argument("refs", nargs=-1, required=True)
@click.option("--into-base", is_flag=True, help="Merge REF (and its stacked parents) into its base: a derived base.")
@click.option("--name", help="Name of the derived base (default REF-merged) or of the new adapter (required).")
@click.option("--dtype", default="bf16", show_default=True, help=f"Derived base dtype: {', '.join(DTYPES)}.")
@click.option("--method", help=f"How to combine adapters: {', '.join(METHODS)}.")
@click.option("--weights", help="One weight per adapter, comma-separated (default 1.0 each).")
@click.option("--density", type=float, help="Fraction of values kept (ties, dare_linear, dare_ties).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for the dare methods.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@pass_state
def merge_command(state, refs, into_base, name, dtype, method, weights, density, seed, as_json):
    """Merge REF into its base (--into-base), or combine adapters A B [C ...] into a new version."""
    if into_base:
        if len(refs) != 1:
            raise UsageError("--into-base merges one adapter (with its stacked parents)",
                             "give one REF; to combine adapters drop --into-base and pass --method")
        config = {"into_base": True, "dtype": dtype}
        for flag, value in (("--method", method), ("--weights", weights), ("--density", density)):
            if value is not None:
                raise UsageError(f"{flag} is for combining adapters, not for --into-base", f"drop {flag}")
    else:
        config = {"adapters": list(refs[1:]), "method": method, "weights": _parse_weights(weights),
                  "density": density, "seed": seed}
        if dtype != "bf16":
            raise UsageError("--dtype applies to --into-base", "drop --dtype")
        if method is None and len(refs) == 1:
            raise UsageError("merge what? pass --into-base, or several adapters with --method",
                             f"`adaptr merge {refs[0]} --into-base`, or `adaptr merge A B --method linear --name N`")
    request = StageRequest(stage="merge", parent=refs[0], name=name,
                           config={k: v for k, v in config.items() if v is not None})
    run = run_stage(state.registry, request, reporter=RichReporter())
    if as_json:
        echo_json(run)
    else:
        click.echo(run["output_ref"] or "")


@click.command("export")
@click.argument("ref")
@click.argument("out_dir", type=click.Path(path_type=str))
@click.option("--merged", is_flag=True, help="Write the full model (base with the chain merged in).")
@click.option("--dtype", default="bf16", show_default=True, help=f"dtype with --merged: {', '.join(DTYPES)}.")
@click.option("--one-adapter", is_flag=True,
              help="Write a stacked chain as ONE PEFT LoRA (ranks concatenated, scalings folded in).")
@click.option("--target", help=f"Serving engine ({', '.join(TARGETS)}): write what it reads, refuse what it "
                               "cannot serve, print the command that serves it.")
@click.option("--json", "as_json", is_flag=True, help="Print adaptr.json's content.")
@pass_state
def export_command(state, ref, out_dir, merged, dtype, one_adapter, target, as_json):
    """Export REF into OUT_DIR as a PEFT adapter dir (or a full model with --merged), with adaptr.json."""
    from .export import check_out_dir, export

    check_out_dir(out_dir)  # before opening the registry: the cheapest refusal first
    if dtype != "bf16" and not merged:
        raise UsageError("--dtype applies to --merged exports", "drop --dtype, or add --merged")
    if merged and (one_adapter or target):
        flag = "--target" if target else "--one-adapter"
        raise UsageError(f"--merged writes a full model, {flag} an adapter", f"drop --merged or {flag}")
    if target:
        check_target(target)
    registry = state.registry
    for needed in registry.needs(registry.node(ref)):  # verify before use
        registry.verified(needed)
    data = export(registry, ref, out_dir, merged=merged, dtype=dtype, one_adapter=one_adapter, target=target,
                  reporter=RichReporter() if merged else None)
    if as_json:
        echo_json(data)
    elif target:
        click.echo(data["serve_command"])
    else:
        click.echo(str(Path(out_dir).expanduser().absolute()))


def register(cli) -> None:
    cli.add_command(merge_command)
    cli.add_command(export_command)
