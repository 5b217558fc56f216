"""Registry commands: init, base, import, ls, show, lineage, tag, untag, rm."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..errors import UsageError
from ..registry import RELATIONS, Registry
from . import render
from .common import State, console, echo_err, echo_json, pass_state

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_PAGE = 50


@click.command("init")
@click.argument("directory", required=False)
@pass_state
def init_cmd(state: State, directory):
    """Create a registry in DIRECTORY (default: --registry, else ./registry)."""
    target = Path(directory or state.registry_path or "registry")
    if target.suffix == ".db":
        target = target.parent
    existed = (target / "adaptr.db").exists()
    Registry.init(target).close()
    echo_err(f"{'registry already exists' if existed else 'initialised registry'} at {target.resolve()}")


@click.group("base")
def base_group():
    """Register and list base models."""


@base_group.command("add")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="PATH_OR_HUB_ID",
              help="A local model directory, or a Hub model id (owner/name).")
@click.option("--revision", help="Hub branch, tag or commit (default: main, pinned to its commit).")
@pass_state
def base_add(state: State, name, source, revision):
    """Record a base model under NAME."""
    from ..refs import check_name

    check_name(name, "base name")
    registry = state.registry
    path = Path(source).expanduser()
    if path.is_dir():
        if revision:
            raise UsageError("--revision applies to Hub ids only",
                             f"drop --revision for the local directory {source}")
        from ..bases import add_local_base

        base = add_local_base(registry, name, path)
    elif path.exists():
        raise UsageError(f"{source} is a file, not a model directory", "pass the model's directory")
    elif HUB_ID.match(source):
        base = _add_hub_base(registry, name, source, revision)
    else:
        raise UsageError(f"{source} does not exist",
                         "pass an existing model directory, or a Hub id such as owner/name")
    echo_err(f"added base {base['name']} ({base['source']})")


def _add_hub_base(registry: Registry, name: str, hub_id: str, revision: str | None) -> dict:
    try:
        from ..hub import add_hub_base
    except ImportError as exc:
        if exc.name not in ("adaptr.hub", "huggingface_hub") and "add_hub_base" not in str(exc):
            raise
        raise UsageError(f"Hub bases are not supported by this installation ({exc})",
                         "download the model and pass its local directory to --from") from None
    return add_hub_base(registry, name, hub_id, revision)


@base_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects to stdout.")
@pass_state
def base_ls(state: State, as_json):
    """List base models."""
    bases = state.registry.bases()
    if as_json:
        echo_json([render.base_json(b) for b in bases])
    elif bases:
        click.echo(render.bases_table(bases, bold=_tty()))
    else:
        echo_err("no bases yet; add one with `adaptr base add NAME --from PATH_OR_HUB_ID`")


@click.command("import")
@click.argument("adapter_dir")
@click.option("--base", "base_name", required=True, metavar="NAME",
              help="The registered base it was trained on.")
@click.option("--name", help="Adapter name (default: the directory's name).")
@click.option("--parent", metavar="REF", help="The version (or base) this adapter came from.")
@click.option("--relation", type=click.Choice(RELATIONS),
              help="How it came from --parent (default: continued).")
@pass_state
def import_cmd(state: State, adapter_dir, base_name, name, parent, relation):
    """Import a PEFT LoRA adapter directory as a new version."""
    from ..peftdir import import_adapter
    from ..refs import check_adapter_name

    if name is not None:
        check_adapter_name(name)
    version = import_adapter(state.registry, adapter_dir, base=base_name, name=name,
                             parent=parent, relation=relation)
    skipped = version.record.skipped_files
    if skipped:
        echo_err(f"left out pickled files: {', '.join(skipped)}")
    echo_err(f"imported {version['ref']}")
    click.echo(version["ref"])


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects to stdout.")
@click.option("--base", help="Only versions trained on this base.")
@click.option("--stage", help="Only versions made by this stage (sft, dpo, import, ...).")
@click.option("--limit", type=click.IntRange(min=0), default=DEFAULT_PAGE, show_default=True,
              help="Newest versions to show; 0 shows all.")
@click.option("--sort", "sort_by", metavar="METRIC",
              help="Best first by a recorded evaluation metric (e.g. preference.accuracy; "
                   "loss sorts lowest first); versions without a value come last.")
@pass_state
def ls_cmd(state: State, as_json, base, stage, limit, sort_by):
    """List adapter versions, newest first (or best first with --sort)."""
    registry = state.registry
    if base:
        registry.base(base)  # an unknown base is an error, not an empty list
    metric = None
    if sort_by:
        adapters, metric = _sorted_adapters(registry, sort_by, base, stage, limit)
    else:
        adapters = registry.adapters(base=base, stage=stage, limit=limit or None)
    if as_json:
        echo_json([_with_metric(render.adapter_json(a), a, metric) for a in adapters])
    elif adapters:
        click.echo(render.adapters_table(adapters, bold=_tty(), metric=metric and (metric[0].name, metric[1])))
    if limit and len(adapters) == limit:
        more = registry.count_adapters(base=base, stage=stage) - limit
        if more > 0:
            echo_err(f"{more} more not shown; pass --limit N (0 for all)")
    if not adapters and not as_json:
        echo_err("no adapter versions match" if base or stage
                 else "no adapter versions yet; import one with `adaptr import`")


def _tty() -> bool:
    return click.get_text_stream("stdout").isatty()


def _sorted_adapters(registry: Registry, name: str, base, stage, limit: int):
    """One page of versions ordered by a metric (best first, missing values last)."""
    from .. import evalstore

    choice = evalstore.choose_metric(registry, name)
    echo_err(f"sorted by {choice.describe()}")
    key = choice.key
    sql = ("SELECT a.id FROM adapters a JOIN bases b ON b.id = a.base_id LEFT JOIN evaluations e ON "
           "e.node_id = a.id AND e.evaluator = ? AND e.eval_set_sha256 = ? AND e.settings_sha256 = ? "
           "LEFT JOIN eval_metrics m ON m.evaluation_id = e.id AND m.name = ? WHERE 1=1")
    params: list = [key.evaluator, key.eval_set_sha256, key.settings_sha256, choice.metric]
    if base:
        sql, params = sql + " AND b.name = ?", params + [base]
    if stage:
        sql, params = sql + " AND a.stage = ?", params + [stage]
    order = "DESC" if choice.higher_is_better else "ASC"
    sql += f" ORDER BY m.value IS NULL, m.value {order}, a.created_at DESC, a.id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    adapters = [registry.adapter_by_id(r["id"]) for r in registry.query(sql, params)]
    return adapters, (choice, evalstore.metric_values(registry, choice, [a["id"] for a in adapters]))


def _with_metric(out: dict, adapter: dict, metric) -> dict:
    if metric is not None:
        out["metric"] = {"name": metric[0].name, "value": metric[1].get(adapter["id"])}
    return out


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object to stdout.")
@pass_state
def show_cmd(state: State, ref, as_json):
    """Show one adapter version (REF: NAME-vN, NAME or NAME@ALIAS) or a base by name."""
    node = state.registry.node(ref)
    if node["kind"] == "base":
        _show_base(node, as_json)
        return
    from ..serving import report

    serving = report(state.registry, node)
    if as_json:
        echo_json({**render.adapter_json(node, full=True), "serving": serving,
                   "loss_curve": state.registry.loss_curve(node)})
        return
    rows = [(key, node.get(key)) for key in ("ref", "base", "stage", "status", "created_at", "path",
                                              "sha256", "run_id", "hub_repo", "hub_commit")]
    rows.insert(2, ("parents", render.parents_text(node["parents"]) or "-"))
    rows.insert(3, ("aliases", ", ".join(node["aliases"]) or "-"))
    rows += [(f"config.{k}", v) for k, v in sorted(node["config"].items()) if v not in (None, {}, [])]
    rows += [(f"metrics.{k}", v) for k, v in sorted(node["metrics"].items())]
    rows += [(f"serving.{t}", render.verdict_text(v)) for t, v in serving.items()]
    console().print(render.fields_table([r for r in rows if r[1] is not None]))


def _show_base(base: dict, as_json: bool) -> None:
    if as_json:
        echo_json(render.base_json(base, full=True))
        return
    rows = [(key, base.get(key)) for key in render.BASE_FIELDS if key != "parents"]
    rows.insert(1, ("parents", render.parents_text(base["parents"]) or "-"))
    console().print(render.fields_table([r for r in rows if r[1] is not None]))


@click.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the node and its edges as JSON.")
@click.option("--bases/--no-bases", default=True, show_default=True,
              help="Follow the link from each adapter to the base it was trained on.")
@click.option("--depth", type=click.IntRange(min=0), default=30, show_default=True,
              help="Levels drawn in each direction; 0 draws all (--json always has all).")
@click.option("--metric", metavar="NAME",
              help="Show each node's value of a recorded evaluation metric (e.g. preference.accuracy) "
                   "and its change from its parent.")
@pass_state
def lineage_cmd(state: State, ref, as_json, bases, depth, metric):
    """Draw the ancestors and descendants of REF (an adapter ref or a base name)."""
    registry = state.registry
    node = registry.node(ref)
    choice = None
    if metric:
        from .. import evalstore

        choice = evalstore.choose_metric(registry, metric, node_id=node["id"])
        echo_err(f"{choice.describe()}; in brackets: the change from the parent")
    if as_json:
        ancestors = registry.ancestors(node["id"], bases=bases)
        descendants = registry.descendants(node["id"], bases=bases)
        out = {"node": {"ref": node["ref"], "kind": node["kind"]},
               "ancestors": [render.edge_json(e) for e in ancestors],
               "descendants": [render.edge_json(e) for e in descendants]}
        if choice is not None:
            out["metric"] = _metric_json(registry, choice, node, ancestors + descendants)
        echo_json(out)
        return
    console().print(lineage_tree(registry, ref, bases=bases, depth=depth, metric=choice))


def _metric_json(registry: Registry, choice, node: dict, edges: list[dict]) -> dict:
    from .. import evalstore

    refs = {node["id"]: node["ref"]}
    for edge in edges:
        refs[edge["child"]], refs[edge["parent"]] = edge["child_ref"], edge["parent_ref"]
    found = evalstore.deltas(registry, choice, refs)
    values = {refs[nid]: {"value": d["value"], "parent": refs.get(d["parent_id"]) if d["parent_id"] else None,
                          "delta": d["delta"]} for nid, d in found.items()}
    return {"name": choice.name, "eval_set": choice.eval_set, "evaluator": choice.key.evaluator,
            "eval_set_sha256": choice.key.eval_set_sha256, "settings_sha256": choice.key.settings_sha256,
            "higher_is_better": choice.higher_is_better, "values": values}


def lineage_tree(registry: Registry, ref: str, *, bases: bool = True, depth: int = 30, metric=None):
    """The rich Tree that `adaptr lineage REF` prints (also used by `adaptr demo`).

    With ``metric`` (an :class:`adaptr.evalstore.MetricChoice`), each node drawn also shows its
    value and, in brackets, the change from its parent.
    """
    node = registry.node(ref)
    ancestors = registry.ancestors(node["id"], bases=bases)
    descendants = registry.descendants(node["id"], bases=bases)
    ids = {node["ref"]: node["id"]}
    for edge in ancestors + descendants:
        ids[edge["child_ref"]], ids[edge["parent_ref"]] = edge["child"], edge["parent"]

    def label_for(refs):
        labels = registry.node_labels({ids[r] for r in refs})
        if metric is not None:
            _add_metric(registry, metric, labels, {r: ids[r] for r in refs})
        return labels

    return render.lineage_tree(node, ancestors, descendants, max_depth=depth, label_for=label_for)


def _add_metric(registry: Registry, choice, labels: dict[str, str], ids: dict[str, int]) -> None:
    from .. import evalstore

    found = evalstore.deltas(registry, choice, ids.values())
    for ref, node_id in ids.items():
        if node_id in found:
            d = found[node_id]
            change = f" ({render.delta_text(d['delta'], choice.higher_is_better)})" if d["delta"] is not None else ""
            labels[ref] = f"{labels.get(ref, '')} · {choice.metric} {render.metric_text(d['value'])}{change}"


@click.command("tag")
@click.argument("ref")
@click.argument("alias")
@pass_state
def tag_cmd(state: State, ref, alias):
    """Point NAME@ALIAS at the version REF names (moving it if it pointed elsewhere)."""
    tagged = state.registry.tag(ref, alias)
    echo_err(f"{tagged['name']}@{alias} -> {tagged['ref']}")


@click.command("untag")
@click.argument("ref")
@click.argument("alias")
@pass_state
def untag_cmd(state: State, ref, alias):
    """Remove ALIAS from the version REF names."""
    state.registry.untag(ref, alias)
    echo_err(f"removed alias {alias} from {ref}")


@click.command("rm")
@click.argument("ref")
@click.option("--force", is_flag=True,
              help="Remove even if other versions descend from it (their edges are cut).")
@pass_state
def rm_cmd(state: State, ref, force):
    """Remove an adapter version: its row and its files together."""
    from ..jobs import refresh

    refresh(state.registry)  # a run whose process died no longer holds its inputs
    removed = state.registry.remove_adapter(ref, force=force)
    echo_err(f"removed {removed['ref']}")


def register(cli: click.Group) -> None:
    for command in (init_cmd, base_group, import_cmd, ls_cmd, show_cmd, lineage_cmd, tag_cmd,
                    untag_cmd, rm_cmd):
        cli.add_command(command)
    from . import maintenance_cmds

    maintenance_cmds.register(cli)
