"""Evaluation results in the registry, and the queries that compare them along the lineage.

One row of ``evaluations`` per (node, eval-set digest, evaluator, settings digest): a result is
computed once and read back ever after (``adaptr eval --force`` replaces it). Its metrics are rows
of ``eval_metrics`` (so ``ls --sort`` and ``lineage --metric`` are plain SQL), generated outputs
rows of ``eval_outputs``. Everything here is plain SQL over :class:`Registry`: no torch, no
sqlite-utils on the read paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

from .errors import NotFoundError, UsageError
from .registry import Registry, now
from .refs import format_ref


@dataclass(frozen=True)
class EvalKey:
    """What makes two results comparable: the same data, evaluator and settings."""

    evaluator: str
    eval_set_sha256: str
    settings_sha256: str


def settings_digest(evaluator: str, version: str, settings: dict) -> str:
    """sha256 of the evaluator's name, implementation version and settings (canonical JSON)."""
    text = json.dumps({"evaluator": evaluator, "version": version, "settings": settings},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- writing -------------------------------------------------------------------------------


def record(registry: Registry, results: Iterable[dict], *, replace: bool = False) -> list[int]:
    """Write results in one transaction; return their ids. ``replace`` overwrites an existing key.

    A result is a dict with ``node_id``, ``key`` (EvalKey), ``eval_set``, ``settings``,
    ``metrics`` ({name: value}), ``higher_is_better`` ({name: bool}), and optionally
    ``reference`` (a node dict), ``tokenizer_sha256``, ``outputs``, ``record``, ``run_id``,
    ``source``.
    """
    ids = []
    with registry.write():
        for result in results:
            key = result["key"]
            if replace:
                registry.conn.execute(
                    "DELETE FROM evaluations WHERE node_id = ? AND eval_set_sha256 = ? AND evaluator = ? "
                    "AND settings_sha256 = ?",
                    [result["node_id"], key.eval_set_sha256, key.evaluator, key.settings_sha256])
            ids.append(_insert(registry, result))
    return ids


def _insert(registry: Registry, result: dict) -> int:
    key, reference = result["key"], result.get("reference")
    cursor = registry.conn.execute(
        "INSERT INTO evaluations (node_id, evaluator, eval_set_sha256, settings_sha256, eval_set, "
        "settings, reference_id, reference_ref, tokenizer_sha256, run_id, source, record, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [result["node_id"], key.evaluator, key.eval_set_sha256, key.settings_sha256,
         json.dumps(result.get("eval_set") or {}), json.dumps(result.get("settings") or {}, default=str),
         reference["id"] if reference and reference.get("id") else None,
         (reference or {}).get("ref") or result.get("reference_ref"),
         result.get("tokenizer_sha256"), result.get("run_id"), result.get("source", "local"),
         json.dumps(result.get("record") or {}, default=str), result.get("created_at") or now()])
    evaluation_id = cursor.lastrowid
    better = result.get("higher_is_better") or {}
    registry.conn.executemany(
        "INSERT INTO eval_metrics (evaluation_id, name, value, higher_is_better) VALUES (?, ?, ?, ?)",
        [(evaluation_id, name, None if value is None else float(value), int(better.get(name, True)))
         for name, value in sorted(result["metrics"].items())])
    registry.conn.executemany(
        "INSERT INTO eval_outputs (evaluation_id, position, row_number, prompt, output, expected, score) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(evaluation_id, i, o.get("row"), _text(o.get("prompt")), o["output"], _text(o.get("expected")),
          o.get("score")) for i, o in enumerate(result.get("outputs") or [])])
    return evaluation_id


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


# -- reading -------------------------------------------------------------------------------

_SELECT = """
    SELECT e.*, n.kind, a.name AS a_name, a.version AS a_version, b.name AS b_name
    FROM evaluations e JOIN nodes n ON n.id = e.node_id
    LEFT JOIN adapters a ON a.id = e.node_id LEFT JOIN bases b ON b.id = e.node_id"""


def find(registry: Registry, node_id: int, key: EvalKey) -> dict | None:
    rows = registry.query(
        _SELECT + " WHERE e.node_id = ? AND e.eval_set_sha256 = ? AND e.evaluator = ? "
        "AND e.settings_sha256 = ?", [node_id, key.eval_set_sha256, key.evaluator, key.settings_sha256])
    return _with_metrics(registry, rows)[0] if rows else None


def evaluations_of(registry: Registry, node_ids: list[int]) -> list[dict]:
    """Every result recorded for these nodes, newest first."""
    if not node_ids:
        return []
    marks = ",".join("?" * len(node_ids))
    rows = registry.query(_SELECT + f" WHERE e.node_id IN ({marks}) ORDER BY e.created_at DESC, e.id DESC",
                          list(node_ids))
    return _with_metrics(registry, rows)


def by_id(registry: Registry, evaluation_id: int) -> dict:
    rows = registry.query(_SELECT + " WHERE e.id = ?", [evaluation_id])
    if not rows:
        raise NotFoundError(f"no evaluation with id {evaluation_id}")
    return _with_metrics(registry, rows)[0]


def outputs(registry: Registry, evaluation_id: int) -> list[dict]:
    return registry.query("SELECT position, row_number AS row, prompt, output, expected, score "
                          "FROM eval_outputs WHERE evaluation_id = ? ORDER BY position", [evaluation_id])


def _with_metrics(registry: Registry, rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    marks = ",".join("?" * len(rows))
    metrics: dict[int, dict] = {}
    better: dict[int, dict] = {}
    for evaluation_id, name, value, higher in registry.conn.execute(
            f"SELECT evaluation_id, name, value, higher_is_better FROM eval_metrics "
            f"WHERE evaluation_id IN ({marks}) ORDER BY name", [r["id"] for r in rows]):
        metrics.setdefault(evaluation_id, {})[name] = value
        better.setdefault(evaluation_id, {})[name] = bool(higher)
    return [_evaluation_dict(r, metrics.get(r["id"], {}), better.get(r["id"], {})) for r in rows]


def _evaluation_dict(row: dict, metrics: dict, better: dict) -> dict:
    ref = format_ref(row["a_name"], row["a_version"]) if row["kind"] == "adapter" else row["b_name"]
    return {
        "id": row["id"], "node_id": row["node_id"], "ref": ref, "kind": row["kind"],
        "evaluator": row["evaluator"], "key": EvalKey(row["evaluator"], row["eval_set_sha256"],
                                                       row["settings_sha256"]),
        "eval_set": json.loads(row["eval_set"]), "settings": json.loads(row["settings"]),
        "reference": row["reference_ref"], "tokenizer_sha256": row["tokenizer_sha256"],
        "metrics": metrics, "higher_is_better": better, "run_id": row["run_id"], "source": row["source"],
        "record": json.loads(row["record"]), "created_at": row["created_at"],
    }


def evaluation_json(evaluation: dict) -> dict:
    """The public JSON form of a result (``adaptr eval --json``, ``compare --json``, adaptr.json)."""
    key = evaluation["key"]
    return {"ref": evaluation["ref"], "evaluator": key.evaluator, "eval_set": evaluation["eval_set"],
            "eval_set_sha256": key.eval_set_sha256, "settings": evaluation["settings"],
            "settings_sha256": key.settings_sha256, "reference": evaluation["reference"],
            "tokenizer_sha256": evaluation["tokenizer_sha256"], "metrics": evaluation["metrics"],
            "higher_is_better": evaluation["higher_is_better"], "run_id": evaluation["run_id"],
            "source": evaluation["source"], "created_at": evaluation["created_at"]}


def label(key: EvalKey, eval_set: dict) -> str:
    """``preference on heldout.jsonl (3f2a9c1b0d4e)``: how a key is named on screen."""
    name = eval_set.get("name") or "eval set"
    return f"{key.evaluator} on {name} ({key.eval_set_sha256[:12]})"


# -- choosing a metric ---------------------------------------------------------------------


@dataclass(frozen=True)
class MetricChoice:
    """One metric under one key: the column ``ls --sort`` and ``lineage --metric`` show."""

    metric: str
    key: EvalKey
    eval_set: dict
    higher_is_better: bool

    @property
    def name(self) -> str:
        return f"{self.key.evaluator}.{self.metric}"

    def describe(self) -> str:
        return f"{self.name} ({label(self.key, self.eval_set)})"


def choose_metric(registry: Registry, name: str, *, node_id: int | None = None) -> MetricChoice:
    """The metric ``name`` (``EVALUATOR.METRIC``, or ``METRIC`` when one evaluator has it) under the
    key ``node_id`` was most recently evaluated with, else the key that covers the most nodes."""
    evaluator, _, metric = name.rpartition(".")
    sql = ("SELECT e.evaluator, e.eval_set_sha256, e.settings_sha256, e.eval_set, m.higher_is_better, "
           "COUNT(*) AS nodes, MAX(CASE WHEN e.node_id = ? THEN e.created_at END) AS mine, "
           "MAX(e.created_at) AS newest FROM eval_metrics m JOIN evaluations e ON e.id = m.evaluation_id "
           "WHERE m.name = ?" + (" AND e.evaluator = ?" if evaluator else "") +
           " GROUP BY e.evaluator, e.eval_set_sha256, e.settings_sha256")
    rows = registry.query(sql, [node_id, metric] + ([evaluator] if evaluator else []))
    if not rows:
        raise NotFoundError(f"no evaluation has recorded a metric {name!r}",
                            f"recorded metrics: {', '.join(metric_names(registry)) or 'none yet'}; "
                            "compute some with `adaptr eval REF --data FILE`")
    evaluators = sorted({r["evaluator"] for r in rows})
    if len(evaluators) > 1:
        raise UsageError(f"metric {name!r} is recorded by several evaluators ({', '.join(evaluators)})",
                         f"name one, e.g. --metric {evaluators[0]}.{metric}")
    best = max(rows, key=lambda r: (r["mine"] is not None, r["mine"] or "", r["nodes"], r["newest"]))
    return MetricChoice(metric, EvalKey(best["evaluator"], best["eval_set_sha256"], best["settings_sha256"]),
                        json.loads(best["eval_set"]), bool(best["higher_is_better"]))


def metric_names(registry: Registry) -> list[str]:
    return [r["name"] for r in registry.query(
        "SELECT DISTINCT e.evaluator || '.' || m.name AS name FROM eval_metrics m "
        "JOIN evaluations e ON e.id = m.evaluation_id ORDER BY name")]


def metric_values(registry: Registry, choice: MetricChoice, node_ids: Iterable[int] | None = None) -> dict[int, float]:
    """``node_id -> value`` of the chosen metric, for these nodes (all when None)."""
    key = choice.key
    sql = ("SELECT e.node_id, m.value FROM evaluations e JOIN eval_metrics m ON m.evaluation_id = e.id "
           "WHERE e.evaluator = ? AND e.eval_set_sha256 = ? AND e.settings_sha256 = ? AND m.name = ?")
    params: list = [key.evaluator, key.eval_set_sha256, key.settings_sha256, choice.metric]
    out: dict[int, float] = {}
    ids = sorted(set(node_ids)) if node_ids is not None else None
    for start in range(0, len(ids) if ids is not None else 1, 900):  # SQLite's parameter limit
        chunk_sql, chunk_params = sql, params
        if ids is not None:
            chunk = ids[start:start + 900]
            chunk_sql += f" AND e.node_id IN ({','.join('?' * len(chunk))})"
            chunk_params = params + chunk
        out.update({r["node_id"]: r["value"] for r in registry.query(chunk_sql, chunk_params)})
    return out


def parent_of(registry: Registry, node_ids: Iterable[int]) -> dict[int, list[int]]:
    """Each node's parents in lineage order: its edges by position, then (adapters) its base."""
    ids = sorted(set(node_ids))
    out: dict[int, list[int]] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        marks = ",".join("?" * len(chunk))
        for child, parent in registry.conn.execute(
                f"SELECT child, parent FROM edges WHERE child IN ({marks}) ORDER BY child, position", chunk):
            out.setdefault(child, []).append(parent)
        for node, base in registry.conn.execute(
                f"SELECT id, base_id FROM adapters WHERE id IN ({marks})", chunk):
            out.setdefault(node, []).append(base)
    return out


def deltas(registry: Registry, choice: MetricChoice, node_ids: Iterable[int]) -> dict[int, dict]:
    """``node_id -> {value, parent_id, delta}``: each node's value and its change from the first of
    its parents that has a value under the same key (None when no parent has one)."""
    ids = set(node_ids)
    parents = parent_of(registry, ids)
    values = metric_values(registry, choice, ids | {p for ps in parents.values() for p in ps})
    out = {}
    for node in ids:
        if node not in values:
            continue
        parent = next((p for p in parents.get(node, []) if values.get(p) is not None), None)
        value = values[node]
        delta = value - values[parent] if parent is not None and value is not None else None
        out[node] = {"value": value, "parent_id": parent, "delta": delta}
    return out
