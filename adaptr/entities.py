"""What the registry hands out: typed entities, built from rows in one place (registry.py).

Each is a dataclass whose fields are the row's columns (paths made absolute, JSON decoded, the
lineage links and aliases attached), so a renamed field breaks loudly in one spot. They can
also be read by key (``version["ref"]``): scripts written against the dicts of earlier releases,
and the JSON output, which is these fields.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from . import records


class RunStatus(str, enum.Enum):
    """A run's state: queued -> running -> succeeded | failed | interrupted | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


ACTIVE_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
RESUMABLE_STATUSES = (RunStatus.INTERRUPTED.value, RunStatus.CANCELLED.value, RunStatus.FAILED.value)


class _ByKey(records.ByKey):
    """An entity: its fields, plus ``kind``, ``ref`` and ``record`` where it has them."""

    def to_json(self) -> dict:
        """Every field (and ``kind``/``ref``/``record``), JSON-ready: records and links as dicts."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
               if not f.name.startswith("_")}
        for name in ("kind", "ref", "record"):
            if hasattr(type(self), name):
                out[name] = _plain(getattr(self, name))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, records.ByKey):
        return value.to_json()
    if dataclasses.is_dataclass(value):
        return records.to_dict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class Link(_ByKey):
    """A parent of a version or base, as the child's lineage edge names it."""

    ref: str
    kind: str
    relation: str
    params: dict = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Equal to another Link with the same fields, or to its JSON form."""
        if isinstance(other, dict):
            return self.to_json() == other
        return isinstance(other, Link) and self.to_json() == other.to_json()

    __hash__ = None  # mutable, like the dict it replaces


@dataclass
class Base(_ByKey):
    id: int
    name: str
    source: str
    source_kind: str
    revision: str | None
    path: str | None
    owned: bool
    config_sha256: str | None
    tokenizer_sha256: str | None
    num_parameters: int | None
    dtype: str | None
    architecture: str | None
    sha256: str | None
    created_at: str
    parents: list[Link] = field(default_factory=list)
    _record_json: str = "{}"

    kind = "base"

    @property
    def ref(self) -> str:
        return self.name

    @cached_property
    def record(self) -> records.BaseRecord:
        return records.base_record(json.loads(self._record_json or "{}"))


@dataclass
class AdapterVersion(_ByKey):
    id: int
    name: str
    version: int
    base_id: int
    base: str
    stage: str
    status: str
    path: str
    sha256: str
    run_id: str | None
    config: dict
    metrics: dict
    hub_repo: str | None
    hub_commit: str | None
    created_at: str
    parents: list[Link] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    _record_json: str = "{}"

    kind = "adapter"

    @property
    def ref(self) -> str:
        return f"{self.name}-v{self.version}"

    @cached_property
    def record(self) -> records.VersionRecord:
        """Parsed when first read: listings never pay for it."""
        return records.version_record(json.loads(self._record_json or "{}"))


@dataclass
class Run(_ByKey):
    id: str
    stage: str
    status: str
    executor: str
    request: dict
    config: dict
    run_dir: str
    pid: int | None
    host: str | None
    gpus: str | None
    progress_step: int
    progress_total: int | None
    output_kind: str | None
    output_id: int | None
    output_ref: str | None
    resumed_from_run: str | None
    resumed_from_step: int | None
    error: str | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    job_id: str | None = None  # the scheduler's job id (executor ``slurm``), None for local runs


@dataclass
class Checkpoint(_ByKey):
    run_id: str
    step: int
    path: str
    sha256: str
    created_at: str


@dataclass
class Edge(_ByKey):
    """One lineage edge as a walk (``ancestors``/``descendants``) reached it."""

    child: int
    parent: int
    relation: str
    params: dict
    position: int
    depth: int
    child_ref: str
    child_kind: str
    parent_ref: str
    parent_kind: str
