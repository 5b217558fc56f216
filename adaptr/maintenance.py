"""Registry upkeep shared by `adaptr gc`, `adaptr doctor` and the TUI: leftovers and health."""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from . import store
from .entities import ACTIVE_STATUSES
from .errors import AdaptrError, IntegrityError
from .registry import Registry

# Staging and trash directories are named PREFIX-PID-RANDOM (see ArtifactStore.staging).
_PID_IN_NAME = re.compile(r"-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")


@dataclass
class Leftover:
    path: Path
    reason: str
    keep: bool = False
    """Listed, never removed: the registry does not know the directory (its row may be lost)."""
    pending: dict | None = None
    """The announcement (``pending_artifacts`` row) a crashed publish left, if that is what it is."""


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def find_leftovers(registry: Registry) -> list[Leftover]:
    """Staging directories of dead processes, publishes that crashed, unsealed checkpoints of
    ended runs; and, to be kept, directories the registry has no record of."""
    pending = _crashed_publishes(registry)
    found = _dead_staging(registry) + list(pending.values())
    found += _unrecorded(registry, "adapters", pending) + _unrecorded(registry, "bases", pending)
    return found + _orphan_checkpoints(registry)


def _dead_staging(registry: Registry) -> list[Leftover]:
    out = []
    tmp = registry.store.tmp
    for path in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        match = _PID_IN_NAME.search(path.name)
        if match is None:
            out.append(Leftover(path, "temporary file not made by adaptr"))
        elif not pid_alive(int(match["pid"])):
            out.append(Leftover(path, f"staging directory of process {match['pid']}, which is gone"))
    return out


def _crashed_publishes(registry: Registry) -> dict[str, Leftover]:
    """Announced publishes of dead processes of this host, by stored path."""
    recorded = _recorded_paths(registry)
    out = {}
    for row in registry.query("SELECT path, pid, host FROM pending_artifacts ORDER BY path"):
        if row["host"] != socket.gethostname() or pid_alive(row["pid"]) or row["path"] in recorded:
            continue
        out[row["path"]] = Leftover(registry.store.absolute(row["path"]),
                                    f"publish by process {row['pid']} crashed before it was recorded",
                                    pending=row)
    return out


def _recorded_paths(registry: Registry) -> set[str]:
    rows = registry.query("SELECT path FROM adapters UNION SELECT path FROM bases WHERE path IS NOT NULL")
    return {row["path"] for row in rows}


def _unrecorded(registry: Registry, kind: str, pending: dict[str, Leftover]) -> list[Leftover]:
    """Directories under adapters/ (or bases/) that no row names and no crashed publish explains.

    They are kept: the database may have lost their rows (an older backup restored), and only
    what this database announced is known to be garbage. An adapter name directory whose
    versions are all leftovers goes with them.
    """
    root = registry.root / kind
    if not root.is_dir():
        return []
    recorded = _recorded_paths(registry)
    live = {row["path"] for row in registry.query("SELECT path FROM pending_artifacts")}
    out = []
    for path in sorted(root.iterdir()):
        entries = sorted(path.iterdir()) if kind == "adapters" and path.is_dir() else [path]
        rels = [registry.store.relative(p) for p in entries]
        out += [Leftover(p, "not recorded in this registry: kept (adaptr import DIR registers it; "
                            "delete it yourself if it is garbage)", keep=True)
                for p, rel in zip(entries, rels) if rel not in recorded and rel not in live]
        if kind == "adapters" and all(rel in pending for rel in rels):
            out.append(Leftover(path, "adapter name directory left empty"))
    return out


def _orphan_checkpoints(registry: Registry) -> list[Leftover]:
    """Checkpoint directories with no row, in runs that are over (a live run may be writing one)."""
    out = []
    runs = registry.query("SELECT id, status, run_dir FROM runs")
    recorded = {row["path"] for row in registry.query("SELECT path FROM checkpoints")}
    for run in runs:
        if run["status"] in ACTIVE_STATUSES:
            continue
        run_dir = registry.store.absolute(run["run_dir"])
        checkpoints = run_dir / "checkpoints"
        for path in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
            if registry.store.relative(path) not in recorded:
                out.append(Leftover(path, f"checkpoint with no registry row (run {run['id']}, {run['status']})"))
        # The Trainer writes checkpoint-N here before adaptr seals it into checkpoints/; one
        # still here was cut short by a kill.
        for path in sorted((run_dir / "trainer").glob("checkpoint-*")):
            out.append(Leftover(path, f"unsealed trainer checkpoint (run {run['id']}, {run['status']})"))
    return out


def collect_garbage(registry: Registry, *, dry_run: bool = False) -> list[Leftover]:
    """Remove leftovers; return what was (or, with ``dry_run``, would be) removed or kept.

    Nothing is removed unless SQLite's own check passes. The scan and the renames into trash run
    inside one write transaction, so no publish can place a directory and record its row in
    between.
    """
    from .jobs import refresh

    check_database(registry)
    refresh(registry)  # a run whose process died is over: its partial checkpoints can go
    with registry.write():
        leftovers = find_leftovers(registry)
        if dry_run:
            return leftovers
        doomed = [registry._move_to_trash(item.path) for item in leftovers
                  if not item.keep and item.path.parent != registry.store.tmp]
        for item in leftovers:
            if item.pending:
                registry._release(item.path)
    for path in [item.path for item in leftovers if item.path.parent == registry.store.tmp] + doomed:
        if path is not None:
            _remove(path)
    return leftovers


def check_database(registry: Registry) -> None:
    """Raise unless SQLite's ``quick_check`` finds the database sound."""
    rows = [row[0] for row in registry.conn.execute("PRAGMA quick_check")]
    if rows != ["ok"]:
        raise IntegrityError(f"{registry.db_path} fails SQLite's integrity check ({rows[0]})",
                             "restore adaptr.db from a backup; nothing was removed")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- health --------------------------------------------------------------------------------


@dataclass
class Problem:
    ref: str
    message: str


def check_health(registry: Registry, *, hashes: bool = True) -> tuple[int, list[Problem]]:
    """Verify the database, every adapter version, every base (re-hashing every file) and
    every recorded checkpoint, each through the verify path commands use.

    Returns the number of artifacts checked and the problems found. ``hashes=False`` compares
    file presence and sizes only (nothing is read).
    """
    problems: list[Problem] = []
    try:
        check_database(registry)
    except AdaptrError as exc:
        problems.append(Problem("adaptr.db", exc.message))
    adapters, bases = registry.adapters(), registry.bases()
    checkpoints = registry.query("SELECT run_id, step, path, sha256 FROM checkpoints ORDER BY run_id, step")
    for adapter in adapters:
        _check(problems, adapter["ref"], lambda a=adapter: registry.verified(a) if hashes
               else store.verify(Path(a["path"]), a["sha256"], hashes=False))
    for base in bases:
        _check(problems, base["name"], lambda b=base: _check_base(registry, b, hashes))
    for row in checkpoints:
        path = registry.store.absolute(row["path"])
        _check(problems, f"run {row['run_id']} checkpoint {row['step']}",
               lambda p=path, r=row: store.verify(p, r["sha256"], hashes=hashes))
    return len(adapters) + len(bases) + len(checkpoints), problems


def _check(problems: list[Problem], ref: str, verify) -> None:
    try:
        verify()
    except FileNotFoundError as exc:
        problems.append(Problem(ref, f"{exc.filename} is missing"))
    except AdaptrError as exc:
        problems.append(Problem(ref, exc.message))


def _check_base(registry: Registry, base: dict, hashes: bool) -> None:
    recorded = registry.query("SELECT 1 FROM base_files WHERE base_id = ? LIMIT 1", [base["id"]])
    if base["owned"]:  # a derived base: its manifest lists every file, strays included
        store.verify(Path(base["path"]), base["sha256"], hashes=hashes)
    elif recorded:
        registry.verified(base, deep=hashes)
    elif base["path"]:  # a local base registered before per-file records: its config
        config = Path(base["path"]) / "config.json"
        if base["config_sha256"] and store.sha256_file(config) != base["config_sha256"]:
            raise AdaptrError(f"{config} changed since the base was added")
