"""The registry: bases, adapter versions, lineage, runs, checkpoints and metrics in one SQLite file.

Plain SQLite (WAL, ``busy_timeout``, foreign keys on): reads use the ``sqlite3`` connection,
writes and migrations go through sqlite-utils; the schema comes only from ``migrations.py``.
Every write goes through :meth:`Registry.write`, which starts with ``BEGIN IMMEDIATE`` so that
concurrent read-then-write transactions queue instead of failing with "database is locked".
Layout, schema and guarantees: docs/registry.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from . import dbfile, records
from .records import now
from . import migrations as migrations_mod
from . import store as store_mod
from .errors import ConflictError, NotFoundError, UsageError
from .entities import (ACTIVE_STATUSES, RESUMABLE_STATUSES, AdapterVersion, Base, Checkpoint, Edge, Link, Run,
                       RunStatus)
from .refs import check_adapter_name, check_name, format_ref, parse_ref

if TYPE_CHECKING:
    from sqlite_utils import Database

DB_NAME = "adaptr.db"
DEFAULT_DIR = "registry"
RELATIONS = ("continued", "merged", "stacked")
BASE_RELATION = "base"  # pseudo-relation of an adapter to its base, in lineage walks only
_CRASH_ENV = "ADAPTR_TEST_CRASH_AT"
_HANG_ENV = "ADAPTR_TEST_HANG_AT"


# Columns copied as they are into the entities (the rest are converted in the _*_dict methods).
_BASE_COLUMNS = ("id", "name", "source", "source_kind", "revision", "config_sha256", "tokenizer_sha256",
                 "num_parameters", "dtype", "architecture", "sha256", "created_at")
_ADAPTER_COLUMNS = ("id", "name", "version", "base_id", "base", "stage", "status", "sha256", "run_id",
                    "hub_repo", "hub_commit", "created_at")
_RUN_COLUMNS = ("id", "stage", "status", "executor", "pid", "host", "gpus", "progress_step", "progress_total",
                "output_kind", "output_id", "resumed_from_run", "resumed_from_step", "error", "created_at",
                "started_at", "ended_at", "job_id")


def crash_point(name: str) -> None:
    """Let tests kill the process at a named point (``ADAPTR_TEST_CRASH_AT=name``), or hold it
    there (``ADAPTR_TEST_HANG_AT=name``) until the test kills it with a signal."""
    if os.environ.get(_CRASH_ENV) == name:
        os._exit(70)
    if os.environ.get(_HANG_ENV) == name:
        while True:
            time.sleep(3600)


def process_rank() -> int:
    """This process's rank in a multi-process launch (``accelerate launch``/torchrun), else 0."""
    return int(os.environ.get("RANK", "0"))


def _json(text: str | None) -> Any:
    return json.loads(text) if text else {}


class Registry:
    """A registry rooted at the directory that holds ``adaptr.db``."""

    ingests = True
    """Whether :func:`adaptr.jobs.refresh` ingests the journals of runs on other hosts here (the
    registry's host); a :class:`adaptr.journal.JournalRegistry` (a compute node) does not."""

    def __init__(self, db_path: Path | str, *, _create: bool = False):
        """Open the registry at ``db_path``; only :meth:`init` creates one (``_create``)."""
        self.db_path = Path(db_path).resolve()
        self.root = self.db_path.parent
        conn = dbfile.create(self.db_path) if _create else dbfile.open_existing(self.db_path)
        # Switching to WAL takes an exclusive lock; skip it when the file is already in WAL mode.
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        self.conn = conn
        self._db: Database | None = None
        self._published: list[tuple[int, str]] = []  # recorded in the open transaction
        if migrations_mod.pending_names(conn):
            with self.write():
                migrations_mod.migrations.apply(self.db)
        self.store = store_mod.ArtifactStore(self.root)

    @property
    def db(self) -> Database:
        """The sqlite-utils view of the connection, for writes and migrations.

        Imported on first use: sqlite-utils costs about half of `adaptr ls`'s start-up, and read
        paths use the plain ``conn`` (see docs/performance.md).
        """
        if self._db is None:
            from ._sqlite import Database

            self._db = Database(self.conn, execute_plugins=False)
        return self._db

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path | str = DEFAULT_DIR) -> "Registry":
        """Create a registry in ``directory``, or open the one already there."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the registry directory {directory} ({exc.strerror})",
                             "choose a directory you can write to") from None
        db_path = directory / DB_NAME
        if db_path.exists():
            return cls(db_path)
        stored = [p for p in (directory / "adapters", directory / "bases") if p.is_dir() and any(p.iterdir())]
        if stored:
            raise ConflictError(f"{directory} holds {stored[0].name}/ but no {DB_NAME}: the registry's "
                                "database is missing", "restore adaptr.db from a backup, or create the "
                                "new registry in another directory")
        return cls(db_path, _create=True)

    @classmethod
    def discover(cls, explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> "Registry":
        """Open ``explicit``, else ``$ADAPTR_REGISTRY``, else the nearest ``registry/adaptr.db`` upwards.

        In a process of a job that reports through its journal (``$ADAPTR_JOURNAL``, set by the
        slurm executor's batch script), a :class:`adaptr.journal.JournalRegistry`: adaptr.db is
        never opened there.
        """
        from . import journal

        if os.environ.get(journal.ENV):
            return journal.JournalRegistry.from_env(explicit)
        path = cls.locate(explicit, cwd)
        if path is None:
            raise NotFoundError(
                "no adaptr registry found here or in any parent directory",
                "run `adaptr init` to create ./registry, or pass --registry PATH",
            )
        return cls(path)

    @staticmethod
    def locate(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path | None:
        given = explicit or os.environ.get("ADAPTR_REGISTRY")
        if given:
            path = Path(given)
            path = path / DB_NAME if path.is_dir() or not path.suffix else path
            if not path.exists():
                raise NotFoundError(f"no registry at {path}", f"run `adaptr init {path.parent}` first")
            return path
        here = (cwd or Path.cwd()).resolve()
        for directory in (here, *here.parents):
            candidate = directory / DEFAULT_DIR / DB_NAME
            if candidate.exists():
                return candidate
        return None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction, started with BEGIN IMMEDIATE; nested calls join it."""
        if process_rank() != 0:  # in a multi-process launch only rank 0 records anything
            raise RuntimeError("registry writes are reserved to rank 0 of a multi-process run")
        conn = self.conn
        if conn.in_transaction:
            yield self.db
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise dbfile.locked_error(self.db_path) from None
        try:
            yield self.db
        except BaseException:
            conn.execute("ROLLBACK")
            self._published.clear()
            raise
        conn.execute("COMMIT")
        self._announce_published()

    def _announce_published(self) -> None:
        """Fire ``version_published`` for what the committed transaction recorded: the one place
        it is fired, for every producer (stages, merges, import, pull)."""
        from . import plugins

        published, self._published = self._published, []
        for node_id, kind in published:
            node = self.adapter_by_id(node_id) if kind == "adapter" else self.base_by_id(node_id)
            plugins.pm.hook.version_published(version=node)

    def query(self, sql: str, params: Iterable | dict = ()) -> list[dict]:
        """Rows of a read query as dicts (plain sqlite3: no sqlite-utils import on read paths)."""
        cursor = self.conn.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor]

    def _node(self, kind: str) -> int:
        return self.conn.execute("INSERT INTO nodes (kind) VALUES (?)", [kind]).lastrowid

    # -- bases -----------------------------------------------------------------------------

    def add_base(self, name: str, *, source: str, source_kind: str, path: Path | None = None,
                 revision: str | None = None, owned: bool = False, info: dict | None = None,
                 record: dict | None = None, parents: list[tuple[dict, str, dict]] = (),
                 files: list[dict] = ()) -> dict:
        """Record a base model. ``info`` holds hashes, parameter count, dtype, architecture;
        ``files`` what :func:`adaptr.integrity.base_files` recorded of its directory."""
        check_name(name, "base name")
        info = info or {}
        with self.write():
            if self.conn.execute("SELECT 1 FROM bases WHERE name = ?", [name]).fetchone():
                raise ConflictError(f"base {name!r} already exists",
                                    "choose another name, or see it with `adaptr base ls`")
            node = self._node("base")
            self.db["bases"].insert({
                "id": node, "name": name, "source": source, "source_kind": source_kind,
                "revision": revision, "path": self.store.relative(path) if path else None,
                "owned": int(owned), "config_sha256": info.get("config_sha256"),
                "tokenizer_sha256": info.get("tokenizer_sha256"),
                "num_parameters": info.get("num_parameters"), "dtype": info.get("dtype"),
                "architecture": info.get("architecture"), "sha256": info.get("sha256"),
                "record": json.dumps(records.to_dict(records.base_record(record))), "created_at": now(),
            })
            self._add_edges(node, parents)
            if files:
                self.db["base_files"].insert_all([{"base_id": node, **f} for f in files])
        return self.base(name)

    def refresh_base_files(self, base_id: int, directory: Path, paths: list[str]) -> None:
        """Record the new mtimes of base files that were re-hashed and found unchanged."""
        if process_rank() != 0:
            return
        with self.write():
            for rel in paths:
                self.conn.execute("UPDATE base_files SET mtime_ns = ? WHERE base_id = ? AND path = ?",
                                  [os.stat(Path(directory) / rel).st_mtime_ns, base_id, rel])

    def verified(self, node: dict, *, deep: bool = False) -> dict:
        """``node`` (an adapter or base dict) once its files verify; raises IntegrityError.

        Every command and stage passes what it reads for use through here (docs/registry.md).
        """
        from .integrity import verified

        return verified(self, node, deep=deep)

    def base(self, name: str) -> dict:
        rows = self.query("SELECT * FROM bases WHERE name = ?", [name])
        if not rows:
            raise NotFoundError(f"unknown base {name!r}", "list bases with `adaptr base ls`")
        return self._base_dict(rows[0])

    def base_by_id(self, node_id: int) -> dict:
        return self._base_dict(self.query("SELECT * FROM bases WHERE id = ?", [node_id])[0])

    def bases(self) -> list[dict]:
        return [self._base_dict(r) for r in self.query("SELECT * FROM bases ORDER BY name")]

    def _base_dict(self, row: dict) -> Base:
        values = {k: row[k] for k in _BASE_COLUMNS}
        return Base(**values, owned=bool(row["owned"]),
                    path=str(self.store.absolute(row["path"])) if row["path"] else None,
                    parents=self._parents_of([row["id"]]).get(row["id"], []), _record_json=row["record"])

    # -- adapters --------------------------------------------------------------------------

    def publish_adapter(self, staged: Path, *, name: str, base: str, stage: str,
                        parents: list[tuple[dict, str, dict]] = (), config: dict | None = None,
                        record: dict | None = None, metrics: dict | None = None,
                        run_id: str | None = None) -> dict:
        """Seal ``staged`` (a directory in the store's tmp), place it as the next version, record it.

        ``parents`` are ``(node, relation, params)`` with ``node`` an adapter or base dict.
        """
        check_adapter_name(name)
        base_row = self.base(base)
        for _, relation, _ in parents:
            self._check_relation(relation)
        digest = store_mod.seal(Path(staged))
        with self.write():
            version, final = self._free_version(name)
            self._announce(final)
        try:
            with self.write(), self._placed(Path(staged), final):
                node = self._record_adapter(name, version, base_row, final, digest, stage=stage,
                                            parents=parents, config=config, record=record,
                                            metrics=metrics, run_id=run_id)
        except BaseException:
            self._withdraw(final)
            raise
        return self.adapter_by_id(node)

    def _next_version(self, name: str) -> int:
        """Reserve the next version number of ``name`` (inside the caller's write transaction).

        Numbers come from a counter rather than ``MAX(version)``, so removing the newest version
        never hands its number to different weights (a pushed ``vN`` tag stays unambiguous).
        """
        row = self.conn.execute(
            "SELECT MAX(COALESCE((SELECT last_version FROM adapter_names WHERE name = :n), 0), "
            "COALESCE((SELECT MAX(version) FROM adapters WHERE name = :n), 0)) + 1", {"n": name}
        ).fetchone()
        version = row[0]
        self.conn.execute(
            "INSERT INTO adapter_names (name, last_version) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version", [name, version])
        return version

    def _record_adapter(self, name, version, base_row, final, digest, *, stage, parents, config,
                        record, metrics, run_id) -> int:
        node = self._node("adapter")
        self.db["adapters"].insert({
            "id": node, "name": name, "version": version, "base_id": base_row["id"],
            "stage": stage, "status": "ready", "path": self.store.relative(final),
            "sha256": digest, "run_id": run_id, "config": json.dumps(config or {}),
            "record": json.dumps(records.to_dict(records.version_record(record))),
            "metrics": json.dumps(metrics or {}),
            "created_at": now(),
        })
        self._add_edges(node, parents)
        if run_id:
            self.conn.execute("UPDATE runs SET output_kind = 'adapter', output_id = ? WHERE id = ?",
                              [node, run_id])
        self._published.append((node, "adapter"))
        return node

    def _withdraw(self, final: Path) -> None:
        """Undo :meth:`_announce` after a publish failed cleanly (a crash leaves it for gc)."""
        if self.conn.in_transaction:  # joined an outer transaction, whose rollback undoes both
            return
        with self.write():
            self._release(final)

    def _release(self, final: Path) -> None:
        """Forget the announcement of ``final``, which was never recorded (in a write).

        An adapter's version number goes back too, if nothing took a later one meanwhile: it
        was never recorded or pushed, so a failed or crashed publish leaves no gap.
        """
        rel = self.store.relative(final)
        self.conn.execute("DELETE FROM pending_artifacts WHERE path = ?", [rel])
        parts = Path(rel).parts
        if len(parts) == 3 and parts[0] == "adapters" and parts[2][1:].isdigit():
            version = int(parts[2][1:])
            self.conn.execute("UPDATE adapter_names SET last_version = ? WHERE name = ? AND last_version = ?",
                              [version - 1, parts[1], version])

    def _free_version(self, name: str) -> tuple[int, Path]:
        """The next version number of ``name`` whose directory does not exist (in a write).

        A directory the database does not know is never overwritten: it may be a version whose
        row was lost (an older adaptr.db restored from a backup); the number after it is used.
        """
        while True:
            version = self._next_version(name)
            final = self.root / "adapters" / name / f"v{version}"
            if not final.exists():
                return version, final

    def _announce(self, final: Path) -> None:
        """Record, in its own committed transaction, that ``final`` is about to be placed.

        A crash between placing the directory and committing its row then leaves a row here, and
        `adaptr gc` knows the directory for a leftover of this database; a directory under
        adapters/ or bases/ that no row (and no announcement) names is never removed.
        """
        self.conn.execute("INSERT OR REPLACE INTO pending_artifacts (path, pid, host, created_at) "
                          "VALUES (?, ?, ?, ?)",
                          [self.store.relative(final), os.getpid(), socket.gethostname(), now()])

    @contextlib.contextmanager
    def _placed(self, staged: Path, final: Path) -> Iterator[Path]:
        """Move ``staged`` to ``final`` for the rows recorded in the block; undo it if they fail.

        Must run inside :meth:`write`, after :meth:`_announce` committed: the rows and the
        directory then appear together, and the announcement goes in the same transaction.
        """
        if final.exists():
            raise ConflictError(f"{final} appeared while publishing", "run `adaptr gc`, then try again")
        self.store.place(staged, final)
        crash_point("after-place")
        try:
            yield final
            self.conn.execute("DELETE FROM pending_artifacts WHERE path = ?", [self.store.relative(final)])
        except BaseException:
            doomed = self._move_to_trash(final)
            if doomed:
                store_mod.shutil.rmtree(doomed, ignore_errors=True)
            raise

    def publish_base(self, staged: Path, *, name: str, source: str, parents=(), info=None,
                     record=None, run_id: str | None = None) -> dict:
        """Seal a staged model directory and record it as a derived base owned by the store."""
        check_name(name, "base name")
        info = dict(info or {})
        info["sha256"] = store_mod.seal(Path(staged))
        files = [{"path": rel, "size": entry["size"], "sha256": entry["sha256"],
                  "mtime_ns": (Path(staged) / rel).stat().st_mtime_ns}
                 for rel, entry in store_mod.read_manifest(Path(staged))["files"].items()]
        final = self.root / "bases" / name
        with self.write():
            self.check_base_name_free(name)
            self._announce(final)
        try:
            with self.write(), self._placed(Path(staged), final):
                base = self.add_base(name, source=source, source_kind="derived", path=final, owned=True,
                                     info=info, record=record, parents=parents, files=files)
                self._published.append((base["id"], "base"))
                if run_id:
                    self.conn.execute("UPDATE runs SET output_kind = 'base', output_id = ? WHERE id = ?",
                                      [base["id"], run_id])
        except BaseException:
            self._withdraw(final)
            raise
        return self.base(name)

    def check_base_name_free(self, name: str) -> None:
        """Raise unless a derived base ``name`` can be made: no such base, and no stray directory."""
        check_name(name, "base name")
        if self.has_base(name):
            raise ConflictError(f"base {name!r} already exists", "choose another --name")
        if (self.root / "bases" / name).exists():
            raise ConflictError(f"{self.root / 'bases' / name} exists but no base {name!r} is recorded",
                                "choose another --name (`adaptr gc` lists the directories it keeps)")

    def derived_base(self, adapter: dict, dtype: str) -> dict | None:
        """The derived base ``adapter`` (with its stacked chain) was merged into at ``dtype``.

        Found through the lineage edge the merge recorded, never by name: a base that merely
        happens to be called ``REF-merged`` is not it.
        """
        row = self.conn.execute(
            "SELECT b.name FROM edges e JOIN bases b ON b.id = e.child WHERE e.parent = ? "
            "AND e.relation = 'merged' AND b.source_kind = 'derived' AND json_extract(e.params, '$.via') IS NULL "
            "AND json_extract(e.params, '$.role') IS NULL AND json_extract(e.params, '$.dtype') = ? "
            "ORDER BY b.id LIMIT 1", [adapter["id"], dtype]).fetchone()
        return self.base(row[0]) if row else None

    def free_base_name(self, stem: str) -> str:
        """``stem``, or ``stem-2``, ``stem-3``... : the first name no base (or stray directory) has."""
        name, n = stem, 1
        while self.has_base(name) or (self.root / "bases" / name).exists():
            n += 1
            name = f"{stem}-{n}"
        return name

    def has_base(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM bases WHERE name = ?", [name]).fetchone() is not None

    def search(self, words: str, limit: int = 20) -> tuple[list[dict], list[dict]]:
        """Adapter versions (``ref``, ``stage``, ``base``; newest first) and bases (``name``,
        ``source_kind``) whose name contains ``words``: the TUI's command palette."""
        like = f"%{words}%"
        adapters = self.query(
            "SELECT a.name || '-v' || a.version AS ref, a.stage, b.name AS base FROM adapters a "
            "JOIN bases b ON b.id = a.base_id WHERE a.name || '-v' || a.version LIKE ? "
            "ORDER BY a.created_at DESC, a.id DESC LIMIT ?", [like, limit])
        bases = self.query("SELECT name, source_kind FROM bases WHERE name LIKE ? LIMIT ?", [like, limit])
        return adapters, bases

    def node_labels(self, ids: Iterable[int]) -> dict[str, str]:
        """``ref -> "on BASE · STAGE"`` for adapters, ``"base"`` / ``"derived base"`` for bases,
        for lineage nodes by id (adapters and bases share the id space)."""
        labels: dict[str, str] = {}
        id_list = sorted(ids)
        for start in range(0, len(id_list), 900):  # stay under SQLite's bound-parameter limit
            chunk = id_list[start:start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                    f"SELECT a.name, a.version, b.name, a.stage FROM adapters a JOIN bases b ON b.id = a.base_id "
                    f"WHERE a.id IN ({marks})", chunk):
                labels[f"{row[0]}-v{row[1]}"] = f"on {row[2]} · {row[3]}"
            for row in self.conn.execute(f"SELECT name, source_kind FROM bases WHERE id IN ({marks})", chunk):
                labels[row[0]] = "derived base" if row[1] == "derived" else "base"
        return labels

    def _check_relation(self, relation: str) -> None:
        if relation not in RELATIONS:
            raise UsageError(f"unknown relation {relation!r}", f"use one of {', '.join(RELATIONS)}")

    def _add_edges(self, child: int, parents: Iterable[tuple[dict, str, dict]]) -> None:
        for position, (parent, relation, params) in enumerate(parents):
            self._check_relation(relation)
            self.db["edges"].insert({"child": child, "parent": parent["id"], "relation": relation,
                                     "params": json.dumps(params or {}), "position": position})

    def resolve(self, ref: str) -> dict:
        """The adapter version a ref names: ``NAME-vN``, ``NAME`` (latest) or ``NAME@ALIAS``."""
        parsed = parse_ref(ref)
        if parsed.alias:
            sql = ("SELECT a.id FROM aliases al JOIN adapters a ON a.id = al.adapter_id "
                   "WHERE al.name = ? AND al.alias = ?")
            row = self.conn.execute(sql, [parsed.name, parsed.alias]).fetchone()
        elif parsed.version is not None:
            row = self.conn.execute("SELECT id FROM adapters WHERE name = ? AND version = ?",
                                    [parsed.name, parsed.version]).fetchone()
        else:
            row = self.conn.execute(
                "SELECT id FROM adapters WHERE name = ? ORDER BY version DESC LIMIT 1", [parsed.name]
            ).fetchone()
        if row is None:
            raise self._unknown_ref(ref, parsed.name)
        return self.adapter_by_id(row[0])

    def _unknown_ref(self, ref: str, name: str) -> NotFoundError:
        """The error for a ref that names nothing; the hint lists what ``name`` does have."""
        versions = [r[0] for r in self.conn.execute(
            "SELECT version FROM adapters WHERE name = ? ORDER BY version", [name])]
        if not versions:
            return NotFoundError(f"unknown adapter ref {ref!r}",
                                 "list versions with `adaptr ls`; refs look like sft-v2, sft or sft@prod")
        shown = ("..., " if len(versions) > 5 else "") + ", ".join(f"v{v}" for v in versions[-5:])
        aliases = [r[0] for r in self.conn.execute(
            "SELECT alias FROM aliases WHERE name = ? ORDER BY alias", [name])]
        more = f"; aliases: {', '.join(aliases)}" if aliases else ""
        return NotFoundError(f"unknown adapter ref {ref!r}", f"{name} has versions {shown}{more}")

    def adapter_by_id(self, node_id: int) -> dict:
        rows = self._adapter_rows("WHERE a.id = ?", [node_id])
        if not rows:
            raise NotFoundError(f"no adapter with id {node_id}")
        return rows[0]

    def adapters(self, *, base: str | None = None, stage: str | None = None, limit: int | None = None,
                 offset: int = 0) -> list[dict]:
        """Adapter versions, newest first."""
        clauses, params = [], []
        if base:
            clauses.append("b.name = ?")
            params.append(base)
        if stage:
            clauses.append("a.stage = ?")
            params.append(stage)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        tail = " ORDER BY a.created_at DESC, a.id DESC"
        if limit:
            tail += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return self._adapter_rows(where + tail, params)

    def count_adapters(self, *, base: str | None = None, stage: str | None = None) -> int:
        # No join: the count then runs on the smallest index (a join would visit every row twice).
        sql, params = "SELECT COUNT(*) FROM adapters WHERE 1=1", []
        if base:
            sql, params = sql + " AND base_id = (SELECT id FROM bases WHERE name = ?)", params + [base]
        if stage:
            sql, params = sql + " AND stage = ?", params + [stage]
        return self.conn.execute(sql, params).fetchone()[0]

    def _adapter_rows(self, tail: str, params: list) -> list[dict]:
        sql = ("SELECT a.*, b.name AS base FROM adapters a JOIN bases b ON b.id = a.base_id " + tail)
        rows = self.query(sql, params)
        ids = [r["id"] for r in rows]
        parents = self._parents_of(ids)
        aliases = self._aliases_of(ids)
        return [self._adapter_dict(r, parents.get(r["id"], []), aliases.get(r["id"], [])) for r in rows]

    def _adapter_dict(self, row: dict, parents: list[Link], aliases: list[str]) -> AdapterVersion:
        return AdapterVersion(**{k: row[k] for k in _ADAPTER_COLUMNS}, path=str(self.store.absolute(row["path"])),
                              config=_json(row["config"]), metrics=_json(row["metrics"]), parents=parents,
                              aliases=aliases, _record_json=row["record"])

    def _aliases_of(self, ids: list[int]) -> dict[int, list[str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        out: dict[int, list[str]] = {}
        for row in self.conn.execute(
                f"SELECT adapter_id, alias FROM aliases WHERE adapter_id IN ({marks}) ORDER BY alias", ids):
            out.setdefault(row[0], []).append(row[1])
        return out

    def _parents_of(self, ids: list[int]) -> dict[int, list[dict]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = f"""
            SELECT e.child, e.relation, e.params, n.kind, n.id,
                   a.name AS a_name, a.version AS a_version, b.name AS b_name
            FROM edges e JOIN nodes n ON n.id = e.parent
            LEFT JOIN adapters a ON a.id = e.parent LEFT JOIN bases b ON b.id = e.parent
            WHERE e.child IN ({marks}) ORDER BY e.child, e.position"""
        out: dict[int, list[dict]] = {}
        for child, relation, params, kind, node_id, a_name, a_version, b_name in self.conn.execute(sql, ids):
            ref = format_ref(a_name, a_version) if kind == "adapter" else b_name
            out.setdefault(child, []).append(Link(ref=ref, kind=kind, relation=relation, params=_json(params)))
        return out

    def node(self, ref_or_base: str) -> dict:
        """An adapter by ref, or else a base by name (for lineage, which spans both)."""
        try:
            return self.resolve(ref_or_base)
        except NotFoundError:
            rows = self.query("SELECT * FROM bases WHERE name = ?", [ref_or_base])
            if rows:
                return self._base_dict(rows[0])
            name = parse_ref(ref_or_base).name
            if self.conn.execute("SELECT 1 FROM adapters WHERE name = ?", [name]).fetchone():
                raise  # resolve's error lists the versions that name does have
            raise NotFoundError(f"no adapter ref or base named {ref_or_base!r}",
                                "list versions with `adaptr ls` and bases with `adaptr base ls`") from None

    def needs(self, node: dict) -> list[dict]:
        """Everything loading ``node`` reads: an adapter's stacked chain (deepest first), the
        adapter, and its base; a base alone."""
        if node["kind"] == "base":
            return [node]
        return [*self.stacked_beneath(node), node, self.base(node["base"])]

    def stacked_beneath(self, adapter: dict) -> list[dict]:
        """Adapters that must be active beneath ``adapter`` (its stacked ancestry), deepest first."""
        chain: list[dict] = []
        for parent in adapter.get("parents", []):
            if parent["relation"] != "stacked" or parent["kind"] != "adapter":
                continue
            node = self.resolve(parent["ref"])
            for below in self.stacked_beneath(node) + [node]:
                if below["id"] not in {c["id"] for c in chain}:
                    chain.append(below)
        return chain

    def children(self, node_id: int) -> list[dict]:
        return self.query("SELECT child, relation FROM edges WHERE parent = ?", [node_id])

    def remove_adapter(self, ref: str, *, force: bool = False) -> dict:
        """Delete a version's row and its files together.

        Refused while a queued or running run reads it, and whenever a version is stacked on it
        (that version loads only with it). Other children keep their weights; their lineage
        edges are cut only with ``force``.
        """
        with self.write():
            adapter = self.resolve(ref)  # inside the transaction: nothing can change it meanwhile
            self._check_removable(adapter, force)
            self.conn.execute("DELETE FROM edges WHERE parent = ?", [adapter["id"]])
            self.conn.execute("UPDATE runs SET output_id = NULL WHERE output_id = ?", [adapter["id"]])
            self.conn.execute("DELETE FROM adapters WHERE id = ?", [adapter["id"]])
            self.conn.execute("DELETE FROM nodes WHERE id = ?", [adapter["id"]])
            doomed = self._move_to_trash(Path(adapter["path"]))
        if doomed:
            store_mod.shutil.rmtree(doomed, ignore_errors=True)
        return adapter

    def _check_removable(self, adapter: dict, force: bool) -> None:
        users = self.query("SELECT r.id, r.status FROM run_inputs i JOIN runs r ON r.id = i.run_id "
                           "WHERE i.node_id = ? AND r.status IN (?, ?) ORDER BY r.id",
                           [adapter["id"], *ACTIVE_STATUSES])
        if users:
            raise ConflictError(f"{adapter['ref']} is in use by run {users[0]['id']} ({users[0]['status']})",
                                f"wait for the run to end, or stop it with `adaptr cancel {users[0]['id']}`")
        kids = self.query(
            "SELECT e.relation, a.name, a.version FROM edges e LEFT JOIN adapters a ON a.id = e.child "
            "WHERE e.parent = ? ORDER BY a.name, a.version", [adapter["id"]])
        stacked = [format_ref(k["name"], k["version"]) for k in kids if k["relation"] == "stacked" and k["name"]]
        if stacked:
            verbs = ("is", "loads") if len(stacked) == 1 else ("are", "load")
            raise ConflictError(f"{', '.join(stacked)} {verbs[0]} stacked on {adapter['ref']} and "
                                f"{verbs[1]} only with it",
                                f"remove {'it' if len(stacked) == 1 else 'them'} first (`adaptr rm "
                                f"{stacked[-1]}`), or export a merged copy with `adaptr export --merged`")
        if kids and not force:
            raise ConflictError(
                f"{adapter['ref']} has {len(kids)} child version(s) in its lineage",
                "remove the children first, or pass --force to cut their lineage edges")

    def _move_to_trash(self, path: Path) -> Path | None:
        """Rename ``path`` into tmp/ (atomic), so a crash never leaves a half-deleted artifact."""
        if not path.exists():
            return None
        self.store.tmp.mkdir(parents=True, exist_ok=True)
        doomed = self.store.tmp / f"rm-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(path, doomed)
        return doomed

    # -- aliases ---------------------------------------------------------------------------

    def tag(self, ref: str, alias: str) -> dict:
        check_name(alias, "alias")
        with self.write():
            adapter = self.resolve(ref)  # inside: the version cannot be removed in between
            self.conn.execute(
                "INSERT INTO aliases (name, alias, adapter_id, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET adapter_id = excluded.adapter_id, "
                "created_at = excluded.created_at",
                [adapter["name"], alias, adapter["id"], now()])
        return self.resolve(f"{adapter['name']}@{alias}")

    def untag(self, ref: str, alias: str) -> None:
        check_name(alias, "alias")
        with self.write():
            adapter = self.resolve(ref)
            cur = self.conn.execute(
                "DELETE FROM aliases WHERE name = ? AND alias = ? AND adapter_id = ?",
                [adapter["name"], alias, adapter["id"]])
            if cur.rowcount == 0:
                raise NotFoundError(f"{adapter['ref']} has no alias {alias!r}",
                                    f"see its aliases with `adaptr show {adapter['ref']}`")

    # -- lineage ---------------------------------------------------------------------------

    # The recursion walks nodes (UNION drops repeats, so a diamond or a deep chain costs one step
    # per node); the edges among the reached nodes are read afterwards, labelled in the same
    # query, and their depths computed here.
    _REACH = """
        WITH RECURSIVE reach(id) AS (
            SELECT :id UNION SELECT e.{far} FROM edges e JOIN reach ON e.{near} = reach.id {more}
        )
        SELECT e.child, e.parent, e.relation, e.params, e.position, fa.name, fa.version, fb.name
        FROM (SELECT e.child, e.parent, e.relation, e.params, e.position
              FROM reach JOIN edges e ON e.{near} = reach.id {more_edges}) e
        LEFT JOIN adapters fa ON fa.id = e.{far} LEFT JOIN bases fb ON fb.id = e.{far}"""
    # With bases: an adapter is also linked to the base it was trained on (relation "base").
    _REACH_BASES = {
        "child": ("UNION SELECT a.base_id FROM adapters a JOIN reach ON a.id = reach.id",
                  "UNION ALL SELECT a.id, a.base_id, 'base', '{}', -1 "
                  "FROM reach JOIN adapters a ON a.id = reach.id"),
        "parent": ("UNION SELECT a.id FROM adapters a JOIN reach ON a.base_id = reach.id",
                   "UNION ALL SELECT a.id, a.base_id, 'base', '{}', -1 "
                   "FROM reach JOIN adapters a ON a.base_id = reach.id"),
    }

    def ancestors(self, node_id: int, *, bases: bool = False) -> list[dict]:
        """Edges from ``node_id`` up to its roots, nearest first (``depth`` 1 = its own parents).

        Each edge is a dict: ``child``, ``parent`` (node ids), ``child_ref``, ``child_kind``,
        ``parent_ref``, ``parent_kind``, ``relation``, ``params``, ``position``, ``depth``.
        With ``bases``, each adapter also leads to the base it was trained on (relation
        ``"base"``), so the walk continues through a derived base to what was merged into it.
        """
        return self._walk(node_id, near="child", far="parent", bases=bases)

    def descendants(self, node_id: int, *, bases: bool = False) -> list[dict]:
        """Edges from ``node_id`` down to its leaves, nearest first (``depth`` 1 = its children).

        With ``bases``, a base also leads to every adapter trained on it (relation ``"base"``).
        """
        return self._walk(node_id, near="parent", far="child", bases=bases)

    def _walk(self, node_id: int, *, near: str, far: str, bases: bool) -> list[dict]:
        more, more_edges = self._REACH_BASES[near] if bases else ("", "")
        sql = self._REACH.format(near=near, far=far, more=more, more_edges=more_edges)
        rows = self.conn.execute(sql, {"id": node_id}).fetchall()
        near_at, far_at = (0, 1) if near == "child" else (1, 0)
        labels = self._labels({node_id})  # every other node is the far end of some edge
        by_near: dict[int, list[tuple]] = {}
        for row in rows:
            labels[row[far_at]] = (f"{row[5]}-v{row[6]}", "adapter") if row[5] else (row[7], "base")
            by_near.setdefault(row[near_at], []).append(row)
        edges, seen, frontier, depth = [], {node_id}, [node_id], 0
        while frontier:  # breadth first: each edge gets the depth of its shortest path
            depth += 1
            following = []
            for nid in sorted(frontier):
                for child, parent, relation, params, position, *_ in sorted(
                        by_near.get(nid, ()), key=lambda r: (r[4], r[far_at])):
                    edges.append(Edge(
                        child=child, parent=parent, relation=relation,
                        params={} if params == "{}" else _json(params), position=position,
                        depth=depth, child_ref=labels[child][0], child_kind=labels[child][1],
                        parent_ref=labels[parent][0], parent_kind=labels[parent][1]))
                    far_id = parent if far_at == 1 else child
                    if far_id not in seen:
                        seen.add(far_id)
                        following.append(far_id)
            frontier = following
        return edges

    def _labels(self, ids: set[int]) -> dict[int, tuple[str, str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = f"""SELECT n.id, n.kind, a.name, a.version, b.name FROM nodes n
                  LEFT JOIN adapters a ON a.id = n.id LEFT JOIN bases b ON b.id = n.id
                  WHERE n.id IN ({marks})"""
        return {nid: ((format_ref(an, av) if kind == "adapter" else bn), kind)
                for nid, kind, an, av, bn in self.conn.execute(sql, list(ids))}

    # -- runs, checkpoints, metrics --------------------------------------------------------

    def create_run(self, *, stage: str, request: dict, config: dict, executor: str = "local",
                   gpus: str | None = None, status: str = "queued", inputs: Iterable[int] = (),
                   resumes: str | None = None, run_id: str | None = None) -> dict:
        """Record a run, and the nodes it reads; with ``resumes``, claim that run.

        The claim is a compare-and-set in the same transaction: it fails unless the run is
        still resumable and no other run has claimed it, so two resumes never both go on.
        ``run_id`` is given only when ingesting a run a job recorded in its journal (its
        directory exists already).
        """
        given = run_id is not None
        run_id = run_id or dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        run_dir = self.root / "runs" / run_id
        with self.write():
            if resumes:
                self._claim_for_resume(resumes)
            missing = [n for n in inputs if not self.conn.execute(
                "SELECT 1 FROM nodes WHERE id = ?", [n]).fetchone()]
            if missing:
                raise ConflictError("an input of this run was removed while it was being checked",
                                    "check the versions with `adaptr ls` and start it again")
            run_dir.mkdir(parents=True, exist_ok=given)
            try:
                self.db["runs"].insert({
                    "id": run_id, "stage": stage, "status": status, "executor": executor,
                    "request": json.dumps(request), "config": json.dumps(config),
                    "run_dir": self.store.relative(run_dir), "gpus": gpus, "created_at": now(),
                    "resumed_from_run": resumes,
                })
                self.db["run_inputs"].insert_all(
                    [{"run_id": run_id, "node_id": n} for n in dict.fromkeys(inputs)])
            except BaseException:
                if not given:
                    run_dir.rmdir()
                raise
        return self.run(run_id)

    def _claim_for_resume(self, run_id: str) -> None:
        """Raise unless ``run_id`` ended resumable and no other run resumed it (in a write)."""
        row = self.conn.execute("SELECT status FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise NotFoundError(f"unknown run {run_id!r}", "list runs with `adaptr runs`")
        if row[0] not in RESUMABLE_STATUSES:
            raise ConflictError(f"run {run_id} is {row[0]}, so it cannot be resumed now",
                                "see it with `adaptr runs`")
        other = self.resumed_by(run_id)
        if other:
            raise ConflictError(f"run {run_id} was already resumed by run {other['id']} ({other['status']})",
                                f"see it with `adaptr runs`; resume {other['id']} if it stops")

    def resumed_by(self, run_id: str, *, excluding: str | None = None) -> dict | None:
        """The run (``id``, ``status``) that resumed ``run_id`` and is queued, running or succeeded:
        a run is resumed once. ``excluding`` is a resume run that must not count (itself)."""
        live = (*ACTIVE_STATUSES, RunStatus.SUCCEEDED.value)
        rows = self.query(f"SELECT id, status FROM runs WHERE resumed_from_run = ? AND id IS NOT ? "
                          f"AND status IN ({','.join('?' * len(live))})", [run_id, excluding, *live])
        return rows[0] if rows else None

    def run(self, run_id: str) -> dict:
        rows = self.query("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFoundError(f"unknown run {run_id!r}", "list runs with `adaptr runs`")
        return self._run_dict(rows[0])

    def runs(self, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        sql = "SELECT * FROM runs" + (" WHERE status = ?" if status else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [self._run_dict(r) for r in self.query(sql, [status] if status else [])]

    def _run_dict(self, row: dict) -> Run:
        output_ref = None
        if row["output_id"]:
            label = self._labels({row["output_id"]}).get(row["output_id"])
            output_ref = label[0] if label else None
        return Run(**{k: row[k] for k in _RUN_COLUMNS}, run_dir=str(self.store.absolute(row["run_dir"])),
                   request=_json(row["request"]), config=_json(row["config"]), output_ref=output_ref)

    def active_runs(self) -> list[dict]:
        """The queued and running runs (``id, status, pid, host, gpus, executor, job_id,
        created_at``), oldest first."""
        marks = ",".join("?" * len(ACTIVE_STATUSES))
        return self.query(f"SELECT id, status, pid, host, gpus, executor, job_id, created_at FROM runs "
                          f"WHERE status IN ({marks}) ORDER BY created_at, id", list(ACTIVE_STATUSES))

    def end_run(self, run_id: str, status: str, error: str | None, *,
                only_from: tuple[str, ...] = ACTIVE_STATUSES) -> bool:
        """End a run that is still in one of ``only_from`` (queued or running): one compare-and-set,
        so of two processes ending it (a watcher and the run itself) only the first counts."""
        marks = ",".join("?" * len(only_from))
        with self.write() as db:
            cur = db.execute(f"UPDATE runs SET status = ?, error = ?, ended_at = ? WHERE id = ? "
                             f"AND status IN ({marks})",
                             [str(status), error, now(), run_id, *map(str, only_from)])
        return cur.rowcount == 1

    def start_queued_run(self, run_id: str) -> bool:
        """Mark a queued run running; False if it is no longer queued (cancelled meanwhile)."""
        with self.write() as db:
            cur = db.execute("UPDATE runs SET status = ? WHERE id = ? AND status = ?",
                             [RunStatus.RUNNING.value, run_id, RunStatus.QUEUED.value])
        return cur.rowcount == 1

    def update_run(self, run_id: str, **fields: Any) -> dict:
        for key in ("request", "config"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        with self.write():
            self.db["runs"].update(run_id, fields)
        return self.run(run_id)

    def record_checkpoint(self, run_id: str, step: int, path: Path, sha256: str) -> Checkpoint:
        row = {"run_id": run_id, "step": step, "path": self.store.relative(path), "sha256": sha256,
               "created_at": now()}
        with self.write():
            self.db["checkpoints"].insert(row, replace=True)
        return Checkpoint(**{**row, "path": str(path)})

    def prune_checkpoints(self, run_id: str, keep_last: int, keep_step: int | None = None) -> list[int]:
        """Remove the run's checkpoints but its newest ``keep_last`` and the one at ``keep_step``;
        return the steps removed. Rows and directories go together (into tmp/, then deleted)."""
        with self.write():
            steps = [r[0] for r in self.conn.execute(
                "SELECT step FROM checkpoints WHERE run_id = ? ORDER BY step DESC", [run_id])]
            doomed = [s for s in steps[max(1, keep_last):] if s != keep_step]
            trash = []
            for step in doomed:
                (path,) = self.conn.execute("SELECT path FROM checkpoints WHERE run_id = ? AND step = ?",
                                            [run_id, step]).fetchone()
                self.conn.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step])
                trash.append(self._move_to_trash(self.store.absolute(path)))
        for path in trash:
            if path:
                store_mod.shutil.rmtree(path, ignore_errors=True)
        return doomed

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        rows = self.query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step DESC", [run_id])
        return [Checkpoint(**{**row, "path": str(self.store.absolute(row["path"]))}) for row in rows]

    def add_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        rows = [{"run_id": run_id, "step": step, "name": k, "value": float(v)}
                for k, v in values.items() if isinstance(v, (int, float))]
        if rows:
            with self.write():
                self.db["metrics"].insert_all(rows, replace=True)

    def loss_curve(self, adapter) -> list[list[float]]:
        """A version's training loss by step, ``[step, loss]``: as its record holds it (the whole
        run, resumed parts included), else its run's metrics table."""
        if adapter.record.loss_curve:
            return [[int(step), float(loss)] for step, loss in adapter.record.loss_curve]
        if not adapter.get("run_id"):
            return []
        return [[int(m["step"]), float(m["value"])] for m in self.metrics(adapter["run_id"], "loss")
                if m["value"] is not None]

    def metrics(self, run_id: str, name: str | None = None) -> list[dict]:
        sql = "SELECT step, name, value FROM metrics WHERE run_id = ?"
        params: list = [run_id]
        if name:
            sql, params = sql + " AND name = ?", params + [name]
        return self.query(sql + " ORDER BY name, step", params)
