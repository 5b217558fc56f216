"""Read-side queries for the TUI's evaluation views: results with deltas, chains, generations.

Plain data over :mod:`adaptr.evalstore` (no Textual), like :mod:`adaptr.tui.data`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import evalstore
from ..evalstore import MetricChoice
from ..registry import Registry


@dataclass(frozen=True)
class EvalRow:
    """One metric of one recorded result of the selected node."""

    evaluation_id: int
    choice: MetricChoice
    value: float | None
    delta: float | None
    parent_ref: str | None
    reference: str | None

    @property
    def metric(self) -> str:
        return self.choice.metric


def eval_rows(registry: Registry, node_id: int) -> list[EvalRow]:
    """Every metric recorded for ``node_id``, newest result first, each with its change from the parent."""
    rows = []
    for evaluation in evalstore.evaluations_of(registry, [node_id]):
        for metric, value in evaluation["metrics"].items():
            choice = MetricChoice(metric, evaluation["key"], evaluation["eval_set"],
                                  evaluation["higher_is_better"].get(metric, True))
            found = evalstore.deltas(registry, choice, [node_id]).get(node_id, {})
            parent = found.get("parent_id")
            rows.append(EvalRow(evaluation["id"], choice, value, found.get("delta"),
                                _label(registry, parent) if parent else None, evaluation["reference"]))
    return rows


def _label(registry: Registry, node_id: int) -> str:
    row = registry.query("SELECT a.name, a.version, b.name AS base FROM nodes n LEFT JOIN adapters a ON "
                         "a.id = n.id LEFT JOIN bases b ON b.id = n.id WHERE n.id = ?", [node_id])[0]
    return f"{row['name']}-v{row['version']}" if row["name"] else row["base"]


def chain(registry: Registry, node_id: int, limit: int = 200) -> list[int]:
    """``node_id`` and its first parents up to the root, root first (a diamond follows one side)."""
    out, current = [node_id], node_id
    while len(out) < limit:
        parents = evalstore.parent_of(registry, [current]).get(current, [])
        current = next((p for p in parents if p not in out), None)
        if current is None:
            break
        out.append(current)
    return out[::-1]


def metric_chain(registry: Registry, choice: MetricChoice, node_id: int) -> list[tuple[str, float]]:
    """``(ref, value)`` along the chain to ``node_id`` for the nodes that have a value."""
    ids = chain(registry, node_id)
    values = evalstore.metric_values(registry, choice, ids)
    return [(_label(registry, i), values[i]) for i in ids if values.get(i) is not None]


def annotations(registry: Registry, choice: MetricChoice, node_ids) -> dict[int, str]:
    """``node_id -> "accuracy 0.8182 (+0.1818)"`` for the lineage tree."""
    out = {}
    for node_id, found in evalstore.deltas(registry, choice, node_ids).items():
        text = f"{choice.metric} {_number(found['value'])}"
        if found["delta"] is not None:
            text += f" ({found['delta']:+.4f})"
        out[node_id] = text
    return out


def _number(value) -> str:
    return "–" if value is None else f"{value:.4f}"


@dataclass
class SideBySide:
    parent_ref: str | None
    rows: list[tuple[int | None, str, str | None, str, float | None, float | None]]
    """(row, prompt, parent output, this output, parent score, this score)"""


def generations(registry: Registry, evaluation_id: int, node_id: int) -> SideBySide:
    """The outputs of one generation result beside the parent's under the same key."""
    evaluation = evalstore.by_id(registry, evaluation_id)
    mine = evalstore.outputs(registry, evaluation_id)
    parents = evalstore.parent_of(registry, [node_id]).get(node_id, [])
    theirs, parent_ref = {}, None
    for parent in parents:
        found = evalstore.find(registry, parent, evaluation["key"])
        if found is not None:
            theirs = {o["position"]: o for o in evalstore.outputs(registry, found["id"])}
            parent_ref = found["ref"]
            break
    rows = [(o["row"], prompt_text(o["prompt"]), theirs.get(o["position"], {}).get("output"), o["output"],
             theirs.get(o["position"], {}).get("score"), o["score"]) for o in mine]
    return SideBySide(parent_ref, rows)


def prompt_text(prompt: str | None) -> str:
    """A stored prompt as a reader wants it: the last message of a conversation, else the text."""
    import json

    if prompt and prompt.startswith("["):
        try:
            messages = json.loads(prompt)
            return str(messages[-1].get("content", prompt))
        except (ValueError, AttributeError, IndexError, TypeError):
            return prompt
    return prompt or ""
