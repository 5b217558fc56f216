"""`adaptr eval` (evaluate versions and bases, record the results) and `adaptr compare A B`."""

from __future__ import annotations

import sys

import click

from .. import config as config_mod
from .. import evalstore
from ..errors import UsageError
from . import render
from .common import State, echo_err, echo_json, pass_state


@click.command("eval")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--data", required=True, metavar="FILE",
              help="The eval set: SFT rows (loss), preference pairs (preference) or prompts (generate).")
@click.option("--evaluator", metavar="NAME", help="Evaluator to run (default: chosen by the data's format).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="An evaluator setting, e.g. --set beta=0.1 or --set scorer=mymod:score (repeatable).")
@click.option("--force", is_flag=True, help="Recompute results that are already recorded.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--detach", is_flag=True, help="Run as a background job; print its run id.")
@pass_state
def eval_cmd(state: State, refs, data, evaluator, sets, force, as_json, detach):
    """Evaluate versions (and bases) on an eval set and record each result.

    A result is keyed by the version, the eval set's sha256, the evaluator and its settings; one
    already recorded is shown, not computed again, unless --force. Everything is checked before
    any model loads (data format, tokenizers, scorer); a failure records nothing.
    """
    from .. import evals, stages
    from .common import RichReporter

    registry = state.registry
    request = evals.eval_request(registry, list(refs), data, evaluator=evaluator,
                                 settings=config_mod.parse_sets(list(sets)), force=force)
    reporter = RichReporter()
    ctx = stages.prepare(registry, request, reporter)
    job = evals.job_of(ctx)
    if job.pending and detach:
        _submit(registry, request, as_json)
        return
    run = None
    if job.pending:
        run = registry.create_run(stage="eval", request=request.to_dict(),
                                  config=config_mod.to_dict(ctx.config), status="running")
        try:
            run = stages.execute(ctx, run)
        finally:
            reporter.finish()
        if run["status"] == "cancelled":
            sys.exit(130)
    results = [evalstore.find(registry, t.node["id"], job.key) for t in job.targets]
    computed = {t.node["id"] for t in job.pending}
    _report(results, computed, job, as_json)


def _submit(registry, request, as_json: bool) -> None:
    from .. import jobs

    run = jobs.submit(registry, request)
    if as_json:
        echo_json({"run": run["id"], "status": run["status"]})
        return
    click.echo(run["id"])
    echo_err(f"started run {run['id']} (eval); follow it with `adaptr logs -f {run['id']}`")


def _report(results: list[dict], computed: set[int], job, as_json: bool) -> None:
    if as_json:
        echo_json([{**evalstore.evaluation_json(r), "computed": r["node_id"] in computed} for r in results])
        return
    key = job.key
    echo_err(f"{evalstore.label(key, job.eval_set)}, settings {key.settings_sha256[:12]}: "
             f"{len(computed)} computed, {len(results) - len(computed)} already recorded")
    rows = []
    for result in results:
        status = "computed" if result["node_id"] in computed else "recorded"
        for metric, value in result["metrics"].items():
            rows.append([result["ref"], result["evaluator"], metric, render.metric_text(value),
                         result["reference"] or "", status])
    click.echo(render.columns(("REF", "EVALUATOR", "METRIC", "VALUE", "REFERENCE", "RESULT"), rows,
                              bold=click.get_text_stream("stdout").isatty()))


@click.command("compare")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
@click.option("--rows", "max_rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Generated rows shown side by side per eval set; 0 shows all (--json has all).")
@pass_state
def compare_cmd(state: State, a, b, as_json, max_rows):
    """Compare two versions (or bases): recorded metrics side by side with B - A, and generations."""
    registry = state.registry
    left, right = registry.node(a), registry.node(b)
    if left["id"] == right["id"]:
        raise UsageError(f"{a} and {b} are the same version", "compare two different versions")
    comparison = compare(registry, left, right)
    if as_json:
        echo_json(comparison)
        return
    _print_comparison(comparison, max_rows)


def compare(registry, left: dict, right: dict) -> dict:
    """Everything recorded for both, keyed alike: evaluations, generations, training metrics."""
    mine = {(e["key"]): e for e in evalstore.evaluations_of(registry, [left["id"]])}
    theirs = {(e["key"]): e for e in evalstore.evaluations_of(registry, [right["id"]])}
    metrics, generations = [], []
    for key in sorted(set(mine) | set(theirs), key=lambda k: (k.evaluator, k.eval_set_sha256, k.settings_sha256)):
        ea, eb = mine.get(key), theirs.get(key)
        shown = ea or eb
        for name in sorted(set((ea or {}).get("metrics", {})) | set((eb or {}).get("metrics", {}))):
            va = ea["metrics"].get(name) if ea else None
            vb = eb["metrics"].get(name) if eb else None
            metrics.append({"evaluator": key.evaluator, "eval_set": shown["eval_set"].get("name"),
                            "eval_set_sha256": key.eval_set_sha256, "settings_sha256": key.settings_sha256,
                            "metric": name, "a": va, "b": vb,
                            "delta": vb - va if va is not None and vb is not None else None,
                            "higher_is_better": shown["higher_is_better"].get(name, True)})
        if ea and eb:
            generations += _side_by_side(registry, key, ea, eb)
    return {"a": left["ref"], "b": right["ref"], "evaluations": metrics, "generations": generations,
            "training_metrics": _training_metrics(left, right)}


def _side_by_side(registry, key, ea: dict, eb: dict) -> list[dict]:
    outputs_a = {o["position"]: o for o in evalstore.outputs(registry, ea["id"])}
    outputs_b = {o["position"]: o for o in evalstore.outputs(registry, eb["id"])}
    return [{"evaluator": key.evaluator, "eval_set": ea["eval_set"].get("name"), "row": oa["row"],
             "prompt": oa["prompt"], "expected": oa["expected"], "a_output": oa["output"],
             "b_output": outputs_b[p]["output"], "a_score": oa["score"], "b_score": outputs_b[p]["score"]}
            for p, oa in sorted(outputs_a.items()) if p in outputs_b]


def _training_metrics(left: dict, right: dict) -> list[dict]:
    ma, mb = left.get("metrics") or {}, right.get("metrics") or {}
    out = []
    for name in sorted(set(ma) | set(mb)):
        va, vb = ma.get(name), mb.get(name)
        if not all(v is None or isinstance(v, (int, float)) for v in (va, vb)):
            continue
        out.append({"metric": name, "a": va, "b": vb,
                    "delta": vb - va if va is not None and vb is not None else None})
    return out


def _print_comparison(comparison: dict, max_rows: int) -> None:
    a, b = comparison["a"], comparison["b"]
    tty = click.get_text_stream("stdout").isatty()
    if comparison["evaluations"]:
        rows = [[m["evaluator"], f"{m['eval_set']} ({m['eval_set_sha256'][:8]})", m["metric"],
                 render.metric_text(m["a"]), render.metric_text(m["b"]),
                 render.delta_text(m["delta"], m["higher_is_better"])] for m in comparison["evaluations"]]
        click.echo(render.columns(("EVALUATOR", "EVAL SET", "METRIC", a, b, "B - A"), rows, bold=tty))
    else:
        echo_err(f"no evaluations recorded for {a} or {b}; run `adaptr eval {a} {b} --data FILE`")
    if comparison["training_metrics"]:
        rows = [[m["metric"], render.metric_text(m["a"]), render.metric_text(m["b"]),
                 render.delta_text(m["delta"], None)] for m in comparison["training_metrics"]]
        click.echo("\n" + render.columns(("TRAINING METRIC", a, b, "B - A"), rows, bold=tty))
    generations = comparison["generations"]
    if generations:
        shown = generations if not max_rows else generations[:max_rows]
        rows = [[str(g["row"]), render.one_line(g["prompt"], 30), render.one_line(g["a_output"], 30),
                 render.one_line(g["b_output"], 30), render.metric_text(g["a_score"]),
                 render.metric_text(g["b_score"])] for g in shown]
        click.echo("\n" + render.columns(("ROW", "PROMPT", f"{a} OUTPUT", f"{b} OUTPUT", "A", "B"), rows,
                                         bold=tty))
        if len(shown) < len(generations):
            echo_err(f"{len(generations) - len(shown)} more generated rows; pass --rows 0 or --json")


def register(cli: click.Group) -> None:
    cli.add_command(eval_cmd)
    cli.add_command(compare_cmd)
