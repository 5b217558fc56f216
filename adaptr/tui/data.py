"""Read-side queries the TUI needs: filtered pages of adapter rows, details, files, loss curves.

Listing reads only the columns the table shows, one page at a time, so a registry of 10,000
versions opens as fast as one of ten. Everything here is plain data (no Textual), so it can run
on the UI thread for small reads or in a worker thread with its own :class:`Registry`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..registry import Registry
from ..store import MANIFEST

PAGE_SIZE = 200
KEY_METRICS = ("eval_loss", "final_loss", "train_loss", "loss")
FILTER_KEYS = {"base": "b.name", "stage": "a.stage", "status": "a.status", "name": "a.name"}


@dataclass(frozen=True)
class AdapterFilter:
    """Parsed filter text: ``key:value`` tokens match a column exactly, other words anywhere."""

    exact: tuple[tuple[str, str], ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "AdapterFilter":
        exact, words = [], []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key in FILTER_KEYS and value:
                exact.append((key, value))
            else:
                words.append(token)
        return cls(tuple(exact), tuple(words))

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        for key, value in self.exact:
            clauses.append(f"{FILTER_KEYS[key]} = ?")
            params.append(value)
        for word in self.words:
            clauses.append("(a.name || '-v' || a.version LIKE ? ESCAPE '\\' OR b.name LIKE ? ESCAPE '\\' "
                           "OR a.stage LIKE ? ESCAPE '\\' OR a.status LIKE ? ESCAPE '\\')")
            escaped = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params.extend([escaped] * 4)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass(frozen=True)
class AdapterRow:
    """What one line of the adapters table shows."""

    id: int
    ref: str
    name: str
    base: str
    stage: str
    status: str
    created_at: str
    metric_name: str | None
    metric: float | None


_LIST_SQL = """
    SELECT a.id, a.name, a.version, a.stage, a.status, a.created_at, a.metrics, b.name AS base
    FROM adapters a JOIN bases b ON b.id = a.base_id {where}
    ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?"""


def key_metric(metrics: dict) -> tuple[str | None, float | None]:
    """The metric a table column shows: eval loss if recorded, else the final training loss."""
    for name in KEY_METRICS:
        value = metrics.get(name)
        if isinstance(value, (int, float)):
            return name, float(value)
    return None, None


def adapter_page(registry: Registry, flt: AdapterFilter, offset: int = 0,
                 limit: int = PAGE_SIZE) -> list[AdapterRow]:
    where, params = flt.where()
    rows = registry.query(_LIST_SQL.format(where=where), [*params, limit, offset])
    out = []
    for row in rows:
        name, value = key_metric(_loads(row["metrics"]))
        out.append(AdapterRow(id=row["id"], ref=f"{row['name']}-v{row['version']}", name=row["name"],
                              base=row["base"], stage=row["stage"], status=row["status"],
                              created_at=row["created_at"], metric_name=name, metric=value))
    return out


def adapter_count(registry: Registry, flt: AdapterFilter) -> int:
    where, params = flt.where()
    sql = f"SELECT COUNT(*) AS n FROM adapters a JOIN bases b ON b.id = a.base_id {where}"
    return registry.query(sql, params)[0]["n"]


def adapter_position(registry: Registry, flt: AdapterFilter, adapter_id: int) -> int | None:
    """Index of an adapter in the filtered, newest-first listing (None when filtered out)."""
    where, params = flt.where()
    target = registry.query(
        f"SELECT a.created_at FROM adapters a JOIN bases b ON b.id = a.base_id {where}"
        + (" AND" if where else " WHERE") + " a.id = ?", [*params, adapter_id])
    if not target:
        return None
    created = target[0]["created_at"]
    newer = (" AND" if where else " WHERE") + " (a.created_at > ? OR (a.created_at = ? AND a.id > ?))"
    sql = f"SELECT COUNT(*) AS n FROM adapters a JOIN bases b ON b.id = a.base_id {where}{newer}"
    return registry.query(sql, [*params, created, created, adapter_id])[0]["n"]


def _loads(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


# -- details -------------------------------------------------------------------------------


@dataclass
class FileEntry:
    path: str
    size: int


@dataclass
class AdapterDetail:
    """Everything the detail pane shows for one version."""

    adapter: dict
    files: list[FileEntry] = field(default_factory=list)
    files_error: str | None = None
    loss: list[tuple[int, float]] = field(default_factory=list)
    relative_path: str = ""
    serving: str = ""                 # one line per engine: adaptr.serving.summary


def adapter_detail(registry: Registry, adapter_id: int) -> AdapterDetail:
    adapter = registry.adapter_by_id(adapter_id)
    files, error = artifact_files(Path(adapter["path"]))
    return AdapterDetail(adapter=adapter, files=files, files_error=error,
                         loss=loss_curve(registry, adapter),
                         relative_path=registry.store.relative(Path(adapter["path"])),
                         serving=serving_summary(registry, adapter))


def serving_summary(registry: Registry, adapter: dict) -> str:
    """Which engines `adaptr export --target` can serve this version on (docs/serving.md)."""
    from ..serving import report, summary

    return summary(report(registry, adapter))


def artifact_files(directory: Path) -> tuple[list[FileEntry], str | None]:
    """Files and sizes from the artifact's manifest (no hashing: that is `adaptr verify`)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return [], f"{MANIFEST} is missing: the files are gone or not written by adaptr"
    except (OSError, json.JSONDecodeError) as exc:
        return [], f"cannot read {MANIFEST}: {exc}"
    entries = [FileEntry(path, int(info.get("size", 0)))
               for path, info in sorted(manifest.get("files", {}).items())]
    return entries, None


def loss_curve(registry: Registry, adapter: dict) -> list[tuple[int, float]]:
    """The training loss by step (see Registry.loss_curve)."""
    return [(step, loss) for step, loss in registry.loss_curve(adapter)]


def base_adapter_counts(registry: Registry) -> dict[int, int]:
    return {r["base_id"]: r["n"] for r in
            registry.query("SELECT base_id, COUNT(*) AS n FROM adapters GROUP BY base_id")}


# -- formatting ----------------------------------------------------------------------------


def short_time(iso: str | None) -> str:
    """``2026-01-02T03:04:05.678+00:00`` -> ``2026-01-02 03:04``."""
    if not iso:
        return ""
    return iso[:16].replace("T", " ")


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


