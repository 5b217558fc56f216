"""What a version records about how it was made, measured the same way by every producer.

Imports nothing heavy: library versions come from package metadata, memory from /proc.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import resource
import typing
from dataclasses import dataclass, field
from pathlib import Path

LIBRARIES = ("adaptr", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors",
             "bitsandbytes", "huggingface_hub", "sqlite-utils", "pluggy", "textual")
# A parent made under other versions of these warns when a child continues it.
DRIFT_LIBRARIES = ("torch", "transformers", "peft", "trl")


def now() -> str:
    """The time stamp every record and row carries: UTC, ISO 8601, milliseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (those installed), read from package metadata."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def version_drift(recorded: dict, current: dict) -> list[str]:
    """Libraries whose version differs from a parent's record, as ``name a -> b``."""
    return [f"{name} {recorded[name]} -> {current.get(name, 'missing')}"
            for name in DRIFT_LIBRARIES if name in recorded and recorded[name] != current.get(name)]


def peak_rss_bytes() -> int:
    """This process's peak RSS. Linux's VmHWM, not ru_maxrss, which survives exec and so can
    report the peak of whoever started the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the version record: one declared schema -----------------------------------------------
#
# Every producer writes a VersionRecord (training stages, weighted merges, import, pull) and
# every consumer reads one (show and --json, the TUI, the Hub card and adaptr.json, the drift and
# resume checks). `format` says which schema a stored record follows; a record of format 1 (the
# dicts of the first release, whose keys differed by producer) is read through `_upgrade_v1`, and
# migration m004 rewrote those stored in registries.

FORMAT = 2


class ByKey:
    """Read access by field name too (``record["speed"]["tokens"]``, ``dict(version)``), as the
    dicts of earlier releases gave it; a name that is not a field raises KeyError."""

    def __getitem__(self, key: str):
        if key.startswith("_") or not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default) if not key.startswith("_") else default

    def __contains__(self, key: str) -> bool:
        return not key.startswith("_") and hasattr(self, key)

    def keys(self):
        return self.to_json().keys()

    def items(self):
        return self.to_json().items()

    def to_json(self) -> dict:
        return to_dict(self)


@dataclass
class BaseSnapshot(ByKey):
    """The base a version was made on, as it was then."""

    name: str
    source: str | None = None
    revision: str | None = None
    config_sha256: str | None = None
    tokenizer_sha256: str | None = None
    sha256: str | None = None
    weights_fingerprint: str | None = None


@dataclass
class DataSnapshot(ByKey):
    """A data file: where it was, its sha256, rows and TRL format (or a held-out fraction)."""

    path: str | None = None
    sha256: str | None = None
    rows: int | None = None
    format: str | None = None
    train_rows: int | None = None
    fraction: float | None = None


@dataclass
class Parameters(ByKey):
    trainable: int
    total: int
    trainable_percent: float


@dataclass
class Memory(ByKey):
    """Peak memory: CPU RSS, and GPU memory allocated and reserved by torch's caching allocator."""

    cpu_peak_rss_bytes: int | None = None
    gpu_peak_allocated_bytes: int | None = None
    gpu_peak_reserved_bytes: int | None = None
    gpu_name: str | None = None


@dataclass
class Speed(ByKey):
    train_runtime_s: float | None = None
    wall_s: float | None = None
    tokens: float | None = None
    tokens_per_second: float | None = None
    steps: int | None = None


@dataclass
class WeightedMerge(ByKey):
    """How a weighted merge combined its parents (PEFT's add_weighted_adapter)."""

    method: str
    weights: list[float]
    parents: list[str]
    density: float | None = None
    seed: int | None = None


@dataclass
class ResumedFrom(ByKey):
    run: str
    step: int
    inexact: bool = False
    changes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    text: str | None = None


@dataclass
class VersionRecord(ByKey):
    """How an adapter version was made. ``producer``: ``training``, ``weighted-merge`` or
    ``import``; a pulled version keeps its origin's record, with ``pulled_from`` set."""

    format: int = FORMAT
    producer: str = "training"
    trainer: str | None = None
    mode: str | None = None
    parent: str | None = None
    reference_policy: str | None = None
    frozen_adapters: list[str] = field(default_factory=list)
    base: BaseSnapshot | None = None
    data: DataSnapshot | None = None
    eval_data: DataSnapshot | None = None
    seed: int | None = None
    quantize: str | None = None
    lora: dict | None = None
    libraries: dict = field(default_factory=dict)
    parameters: Parameters | None = None
    memory: Memory | None = None
    speed: Speed | None = None
    first_logged: dict | None = None
    final_metrics: dict = field(default_factory=dict)
    loss_curve: list[list[float]] = field(default_factory=list)
    """``[step, loss]`` as training logged it (the run's metrics table holds the same)."""
    eval_metrics: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    resumed_from: ResumedFrom | None = None
    merge: WeightedMerge | None = None
    imported_from: str | None = None
    base_model_name_or_path: str | None = None
    skipped_files: list[str] = field(default_factory=list)
    pulled_from: dict | None = None
    extra: dict = field(default_factory=dict)
    """What a producer added that the schema does not name: a plugin stage's own fields."""


@dataclass
class BaseMerge(ByKey):
    """How a derived base was made: the chain merged into which base, at what dtype."""

    merged_from: str
    chain: list[str]
    base: str
    dtype: str
    scaling: dict = field(default_factory=dict)
    tensors: int | None = None
    tensors_merged: int | None = None
    shards: int | None = None
    bytes_written: int | None = None
    seconds: float | None = None
    quantized_training: dict | None = None


@dataclass
class BaseRecord(ByKey):
    """What a base records beyond its columns: the merge that made a derived base, the Hub
    revision a Hub base was asked for."""

    format: int = FORMAT
    merge: BaseMerge | None = None
    libraries: dict = field(default_factory=dict)
    memory: Memory | None = None
    requested_revision: str | None = None
    extra: dict = field(default_factory=dict)


def to_dict(record) -> dict:
    """A record as stored and shown: nested dataclasses as dicts."""
    return dataclasses.asdict(record)


def version_record(data: dict | VersionRecord | None) -> VersionRecord:
    """A VersionRecord from its stored form (any format), or the record itself."""
    if isinstance(data, VersionRecord):
        return data
    data = _current(data)
    return _build(VersionRecord, _upgrade_v1(data) if data.get("format", 1) < FORMAT else data)


def base_record(data: dict | BaseRecord | None) -> BaseRecord:
    if isinstance(data, BaseRecord):
        return data
    data = _current(data)
    return _build(BaseRecord, _upgrade_base_v1(data) if data.get("format", 1) < FORMAT else data)


def _current(data: dict | None) -> dict:
    from .errors import UsageError

    data = dict(data or {})
    if not isinstance(data.get("format", 1), int) or data.get("format", 1) > FORMAT:
        raise UsageError(f"a record of format {data.get('format')!r}, newer than this adaptr's {FORMAT}",
                         "upgrade adaptr (`pip install -U adaptr`) to read it")
    return data


def _build(cls, data: dict):
    """``cls`` from a dict, nested dataclasses included; keys it does not declare go to ``extra``
    (or are refused, for a class without one)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values, extra = {}, {}
    for key, value in data.items():
        if key not in known:
            extra[key] = value
            continue
        target = _dataclass_in(hints[key])
        values[key] = _build(target, value) if target and isinstance(value, dict) else value
    if extra:
        if "extra" not in known:
            raise ValueError(f"{cls.__name__} has no field {sorted(extra)[0]!r}")
        values["extra"] = {**values.get("extra", {}), **extra}
    return cls(**values)


def _dataclass_in(hint):
    for candidate in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


# -- format 1: the first release's records -------------------------------------------------

_V1_PRODUCER_KEYS = {"method": "weighted-merge", "imported_from": "import"}


def _upgrade_v1(data: dict) -> dict:
    """A first-release version record in format 2: weighted merges kept their details and
    library versions under other keys, and a pull added ``pulled_from`` to its origin's."""
    out = dict(data)
    if "library_versions" in out:  # weighted merges wrote it so, and the drift check never saw it
        out["libraries"] = out.pop("library_versions")
    if "method" in out and "weights" in out:
        out["merge"] = {"method": out.pop("method"), "weights": out.pop("weights"),
                        "parents": out.pop("parents", []), "density": out.pop("density", None),
                        "seed": out.pop("seed", None)}
        out["producer"] = "weighted-merge"
    elif "imported_from" in out and "trainer" not in out:
        out["producer"] = "import"
    if "dataset" in out and "data" not in out:  # hand-made records of the first release's tests
        out["data"] = out.pop("dataset")
    out["format"] = FORMAT
    return out


def _upgrade_base_v1(data: dict) -> dict:
    out = {"format": FORMAT}
    if "merged_from" in data:
        merge_keys = {f.name for f in dataclasses.fields(BaseMerge)}
        out["merge"] = {k: v for k, v in data.items() if k in merge_keys}
        if data.get("peak_rss_mb") is not None:
            out["memory"] = {"cpu_peak_rss_bytes": int(data["peak_rss_mb"] * 2**20)}
        out["libraries"] = data.get("library_versions") or {}
        data = {k: v for k, v in data.items()
                if k not in merge_keys and k not in ("peak_rss_mb", "library_versions")}
    out.update({k: v for k, v in data.items() if k != "format"})
    return out
