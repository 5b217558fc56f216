"""How registry records look on the command line: JSON objects, aligned tables, lineage trees."""

from __future__ import annotations

from typing import Any

from ..bases import human_count

ADAPTER_FIELDS = ("ref", "name", "version", "base", "stage", "status", "parents", "aliases",
                  "sha256", "path", "created_at", "run_id", "hub_repo", "hub_commit")
BASE_FIELDS = ("name", "source", "source_kind", "revision", "path", "config_sha256",
               "tokenizer_sha256", "num_parameters", "dtype", "architecture", "owned", "sha256",
               "parents", "created_at")


def _parents_json(parents: list[dict]) -> list[dict]:
    return [{"ref": p["ref"], "relation": p["relation"], "kind": p["kind"], "params": p["params"]}
            for p in parents]


def adapter_json(adapter, *, full: bool = False) -> dict:
    """The public JSON form of an adapter version (``full`` adds config, record and metrics)."""
    from ..records import to_dict

    out = {key: adapter.get(key) for key in ADAPTER_FIELDS}
    out["parents"] = _parents_json(adapter["parents"])
    if full:
        out.update(config=adapter.config, record=to_dict(adapter.record), metrics=adapter.metrics)
    return out


def base_json(base, *, full: bool = False) -> dict:
    from ..records import to_dict

    out = {key: base.get(key) for key in BASE_FIELDS}
    out["parents"] = _parents_json(base["parents"])
    if full:
        out["record"] = to_dict(base.record)
    return out


def verdict_text(verdict: dict | str) -> str:
    """``yes`` / ``yes, exported as one adapter`` / ``no: REASON; REASON`` for one serving target
    (a verdict dict of adaptr.serving.report, or its error text)."""
    if isinstance(verdict, str):
        return verdict
    if verdict["servable"]:
        return "yes" if verdict["form"] == "as-is" else "yes, exported as one adapter"
    return "no: " + "; ".join(verdict["reasons"])


def edge_json(edge: dict) -> dict:
    return {"child": edge["child_ref"], "child_kind": edge["child_kind"],
            "parent": edge["parent_ref"], "parent_kind": edge["parent_kind"],
            "relation": edge["relation"], "params": edge["params"], "depth": edge["depth"]}


def short_time(stamp: str | None) -> str:
    return (stamp or "")[:16].replace("T", " ")


def parents_text(parents: list[dict]) -> str:
    return ", ".join(f"{p['ref']} ({p['relation']})" for p in parents)


def columns(headers: tuple[str, ...], rows: list[list[str]], *, bold: bool = False) -> str:
    """An aligned text table, as rich draws one without borders.

    Listings use this instead of a rich Table: rendering 50 rows through rich costs about as
    much as the rest of `adaptr ls` together (docs/performance.md).
    """
    import click

    widths = [max(len(row[i]) for row in [list(headers), *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    return "\n".join([click.style(header, bold=True) if bold else header, *lines])


def adapters_table(adapters: list[dict], *, bold: bool = False,
                   metric: tuple[str, dict[int, float]] | None = None) -> str:
    """The `adaptr ls` table; ``metric`` (name, values by adapter id) adds a column."""
    rows = [[a["ref"], a["base"], a["stage"], a["status"], parents_text(a["parents"]),
             ", ".join(a["aliases"]), short_time(a["created_at"])] for a in adapters]
    headers = ("REF", "BASE", "STAGE", "STATUS", "PARENTS", "ALIASES", "CREATED")
    if metric is not None:
        name, values = metric
        headers += (name.upper(),)
        for row, adapter in zip(rows, adapters):
            row.append(metric_text(values.get(adapter["id"])))
    return columns(headers, rows, bold=bold)


def metric_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def delta_text(delta, higher_is_better: bool | None) -> str:
    """``+0.1250``, with ``better``/``worse`` when the metric's direction is known."""
    if delta is None:
        return "-"
    text = f"{delta:+.4f}"
    if higher_is_better is None or delta == 0:
        return text
    return f"{text}, {'better' if (delta > 0) == higher_is_better else 'worse'}"


def one_line(value, width: int) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def bases_table(bases: list[dict], *, bold: bool = False) -> str:
    rows = [[b["name"], b["source"] if b["source_kind"] != "derived" else f"{b['source']} (derived)",
             (b["revision"] or "")[:12], b["architecture"] or "", human_count(b["num_parameters"]),
             b["dtype"] or "", short_time(b["created_at"])] for b in bases]
    return columns(("NAME", "SOURCE", "REVISION", "ARCHITECTURE", "PARAMS", "DTYPE", "CREATED"), rows,
                   bold=bold)


def fields_table(rows: list[tuple[str, Any]]):
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, "" if value is None else str(value))
    return table


# -- lineage trees -------------------------------------------------------------------------

MAX_CHILDREN = 100  # per node: a base with 90,000 adapters trained on it must not flood the screen
_RELATION_STYLE = {"continued": "green", "merged": "magenta", "stacked": "cyan", "base": "yellow"}


def lineage_tree(node: dict, ancestors: list[dict], descendants: list[dict], label_for,
                 max_depth: int = 0):
    """A rich Tree: the node, its ancestors (parents first) and its descendants (children first).

    ``label_for(refs)`` returns a short description (kind, base, stage) for each ref drawn; it is
    asked only about the nodes that end up in the tree. A node reached twice in a DAG (a
    diamond) is drawn once and then marked "(see above)"; a repeated link to a base is left out.
    Levels below ``max_depth`` (0: no limit) and children past MAX_CHILDREN become a "..." line.
    """
    from rich.text import Text
    from rich.tree import Tree

    plans = [(title, _plan(node["ref"], edges, near, far, max_depth))
             for title, edges, near, far in (("ancestors", ancestors, "child_ref", "parent_ref"),
                                             ("descendants", descendants, "parent_ref", "child_ref"))]
    drawn = {node["ref"]} | {step["target"] for _, plan in plans for step in plan if "target" in step}
    labels = label_for(drawn)
    tree = Tree(Text.assemble((node["ref"], "bold"), "  ", (labels.get(node["ref"], ""), "dim")))
    for title, plan in plans:
        branches = {(): tree.add(Text(title, style="italic"))}
        if not plan:
            branches[()].add(Text("(none)", style="dim"))
        for step in plan:
            branches[step["path"]] = branches[step["path"][:-1]].add(_step_text(step, title, labels))
    return tree


def _plan(root: str, edges: list[dict], near: str, far: str, max_depth: int) -> list[dict]:
    """The lines of one direction of the tree, in drawing order (depth first, iterative)."""
    by_near: dict[str, list[dict]] = {}
    for edge in edges:
        by_near.setdefault(edge[near], []).append(edge)
    seen, plan = {root}, []
    stack = _pending((), by_near.get(root, []))
    while stack:  # iterative: a chain of thousands of versions must not hit the recursion limit
        path, edge = stack.pop()
        step_path = path + (len(plan),)
        if "more" in edge:
            plan.append({"path": step_path, "more": edge["more"]})
            continue
        target = edge[far]
        if target in seen:
            if edge["relation"] != "base":  # the base of every version in a chain is noise
                plan.append({"path": step_path, "target": target, "edge": edge, "repeat": True})
            continue
        seen.add(target)
        plan.append({"path": step_path, "target": target, "edge": edge})
        below = by_near.get(target, [])
        if max_depth and len(step_path) >= max_depth and below:
            plan.append({"path": step_path + (len(plan),), "deeper": True})
        else:
            stack.extend(_pending(step_path, below))
    return plan


def _pending(path: tuple, edges: list[dict]) -> list[tuple]:
    """Stack entries for one node's edges: the first MAX_CHILDREN, then a "... N more" note."""
    shown = [(path, edge) for edge in reversed(edges[:MAX_CHILDREN])]
    hidden = len(edges) - MAX_CHILDREN
    return ([(path, {"more": hidden})] if hidden > 0 else []) + shown


def _step_text(step: dict, title: str, labels: dict[str, str]):
    from rich.text import Text

    if "more" in step:
        return Text(f"... {step['more']:,} more (see --json)", style="dim")
    if "deeper" in step:
        return Text("... (deeper levels: pass --depth 0)", style="dim")
    relation = step["edge"]["relation"]
    shown = relation if relation != "base" else ("trained on" if title == "ancestors" else "base of")
    text = Text.assemble((f"{shown} ", _RELATION_STYLE.get(relation, "")), (step["target"], "bold"),
                         "  ", (labels.get(step["target"], ""), "dim"))
    return text.append("  (see above)", style="dim") if step.get("repeat") else text
