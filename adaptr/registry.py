"""The registry: bases, adapter versions, lineage, runs, checkpoints and metrics in one SQLite file.

Opened through sqlite-utils (WAL, ``busy_timeout``, foreign keys on); the schema comes only from
``migrations.py``. Every write goes through :meth:`Registry.write`, which starts with
``BEGIN IMMEDIATE`` so that concurrent read-then-write transactions queue instead of failing with
"database is locked".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import store as store_mod
from ._sqlite import Database
from .errors import ConflictError, NotFoundError, UsageError
from .migrations import migrations
from .refs import check_adapter_name, check_name, format_ref, parse_ref

DB_NAME = "adaptr.db"
DEFAULT_DIR = "registry"
RELATIONS = ("continued", "merged", "stacked")
BUSY_TIMEOUT_MS = 30_000
_CRASH_ENV = "ADAPTR_TEST_CRASH_AT"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def crash_point(name: str) -> None:
    """Let tests kill the process at a named point (``ADAPTR_TEST_CRASH_AT=name``)."""
    if os.environ.get(_CRASH_ENV) == name:
        os._exit(70)


def _json(text: str | None) -> Any:
    return json.loads(text) if text else {}


class Registry:
    """A registry rooted at the directory that holds ``adaptr.db``."""

    def __init__(self, db_path: Path | str):
        self.db_path = Path(db_path).resolve()
        self.root = self.db_path.parent
        self.store = store_mod.ArtifactStore(self.root)
        conn = sqlite3.connect(str(self.db_path), timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        self.db = Database(conn, execute_plugins=False)
        if migrations.pending(self.db):
            with self.write():
                migrations.apply(self.db)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path | str = DEFAULT_DIR) -> "Registry":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / DB_NAME)

    @classmethod
    def discover(cls, explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> "Registry":
        """Open ``explicit``, else ``$ADAPTR_REGISTRY``, else the nearest ``registry/adaptr.db`` upwards."""
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
        self.db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction, started with BEGIN IMMEDIATE; nested calls join it."""
        conn = self.db.conn
        if conn.in_transaction:
            yield self.db
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable | dict = ()) -> list[dict]:
        return [dict(row) for row in self.db.query(sql, params)]

    def _node(self, kind: str) -> int:
        return self.db.execute("INSERT INTO nodes (kind) VALUES (?)", [kind]).lastrowid

    # -- bases -----------------------------------------------------------------------------

    def add_base(self, name: str, *, source: str, source_kind: str, path: Path | None = None,
                 revision: str | None = None, owned: bool = False, info: dict | None = None,
                 record: dict | None = None, parents: list[tuple[dict, str, dict]] = ()) -> dict:
        """Record a base model. ``info`` holds hashes, parameter count, dtype, architecture."""
        check_name(name, "base name")
        info = info or {}
        with self.write():
            if self.db.execute("SELECT 1 FROM bases WHERE name = ?", [name]).fetchone():
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
                "record": json.dumps(record or {}), "created_at": now(),
            })
            self._add_edges(node, parents)
        return self.base(name)

    def base(self, name: str) -> dict:
        rows = self.query("SELECT * FROM bases WHERE name = ?", [name])
        if not rows:
            raise NotFoundError(f"unknown base {name!r}", "list bases with `adaptr base ls`")
        return self._base_dict(rows[0])

    def base_by_id(self, node_id: int) -> dict:
        return self._base_dict(self.query("SELECT * FROM bases WHERE id = ?", [node_id])[0])

    def bases(self) -> list[dict]:
        return [self._base_dict(r) for r in self.query("SELECT * FROM bases ORDER BY name")]

    def _base_dict(self, row: dict) -> dict:
        out = dict(row)
        out["kind"] = "base"
        out["ref"] = row["name"]
        out["owned"] = bool(row["owned"])
        out["path"] = str(self.store.absolute(row["path"])) if row["path"] else None
        out["record"] = _json(row["record"])
        out["parents"] = self._parents_of([row["id"]]).get(row["id"], [])
        return out

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
            version = self.db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM adapters WHERE name = ?", [name]
            ).fetchone()[0]
            final = self.root / "adapters" / name / f"v{version}"
            if final.exists():  # left by a crash between placing files and recording the row
                store_mod.shutil.rmtree(final)
            self.store.place(Path(staged), final)
            crash_point("after-place")
            node = self._node("adapter")
            self.db["adapters"].insert({
                "id": node, "name": name, "version": version, "base_id": base_row["id"],
                "stage": stage, "status": "ready", "path": self.store.relative(final),
                "sha256": digest, "run_id": run_id, "config": json.dumps(config or {}),
                "record": json.dumps(record or {}), "metrics": json.dumps(metrics or {}),
                "created_at": now(),
            })
            self._add_edges(node, parents)
            if run_id:
                self.db.execute("UPDATE runs SET output_kind = 'adapter', output_id = ? WHERE id = ?",
                                [node, run_id])
        return self.adapter_by_id(node)

    def publish_base(self, staged: Path, *, name: str, source: str, parents=(), info=None,
                     record=None) -> dict:
        """Seal a staged model directory and record it as a derived base owned by the store."""
        check_name(name, "base name")
        info = dict(info or {})
        info["sha256"] = store_mod.seal(Path(staged))
        final = self.root / "bases" / name
        with self.write():
            if self.db.execute("SELECT 1 FROM bases WHERE name = ?", [name]).fetchone():
                raise ConflictError(f"base {name!r} already exists", "choose another --name")
            if final.exists():
                store_mod.shutil.rmtree(final)
            self.store.place(Path(staged), final)
            crash_point("after-place")
            return self.add_base(name, source=source, source_kind="derived", path=final,
                                 owned=True, info=info, record=record, parents=parents)

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
            row = self.db.execute(sql, [parsed.name, parsed.alias]).fetchone()
        elif parsed.version is not None:
            row = self.db.execute("SELECT id FROM adapters WHERE name = ? AND version = ?",
                                  [parsed.name, parsed.version]).fetchone()
        else:
            row = self.db.execute("SELECT id FROM adapters WHERE name = ? ORDER BY version DESC LIMIT 1",
                                  [parsed.name]).fetchone()
        if row is None:
            raise NotFoundError(f"unknown adapter ref {ref!r}",
                                "list versions with `adaptr ls`; refs look like sft-v2, sft or sft@prod")
        return self.adapter_by_id(row[0])

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
        sql = "SELECT COUNT(*) FROM adapters a JOIN bases b ON b.id = a.base_id WHERE 1=1"
        params = []
        if base:
            sql, params = sql + " AND b.name = ?", params + [base]
        if stage:
            sql, params = sql + " AND a.stage = ?", params + [stage]
        return self.db.execute(sql, params).fetchone()[0]

    def _adapter_rows(self, tail: str, params: list) -> list[dict]:
        sql = ("SELECT a.*, b.name AS base FROM adapters a JOIN bases b ON b.id = a.base_id " + tail)
        rows = self.query(sql, params)
        ids = [r["id"] for r in rows]
        parents = self._parents_of(ids)
        aliases = self._aliases_of(ids)
        return [self._adapter_dict(r, parents.get(r["id"], []), aliases.get(r["id"], [])) for r in rows]

    def _adapter_dict(self, row: dict, parents: list[dict], aliases: list[str]) -> dict:
        out = dict(row)
        out["kind"] = "adapter"
        out["ref"] = format_ref(row["name"], row["version"])
        out["path"] = str(self.store.absolute(row["path"]))
        for key in ("config", "record", "metrics"):
            out[key] = _json(row[key])
        out["parents"] = parents
        out["aliases"] = aliases
        return out

    def _aliases_of(self, ids: list[int]) -> dict[int, list[str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        out: dict[int, list[str]] = {}
        for row in self.db.execute(
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
        for child, relation, params, kind, node_id, a_name, a_version, b_name in self.db.execute(sql, ids):
            ref = format_ref(a_name, a_version) if kind == "adapter" else b_name
            out.setdefault(child, []).append(
                {"ref": ref, "kind": kind, "relation": relation, "params": _json(params)})
        return out

    def node(self, ref_or_base: str) -> dict:
        """An adapter by ref, or else a base by name (for lineage, which spans both)."""
        try:
            return self.resolve(ref_or_base)
        except NotFoundError:
            rows = self.query("SELECT * FROM bases WHERE name = ?", [ref_or_base])
            if rows:
                return self._base_dict(rows[0])
            raise

    def children(self, node_id: int) -> list[dict]:
        return self.query("SELECT child, relation FROM edges WHERE parent = ?", [node_id])

    def remove_adapter(self, ref: str, *, force: bool = False) -> dict:
        """Delete a version's row and its files together; refuse if it has children unless forced."""
        adapter = self.resolve(ref)
        with self.write():
            kids = self.children(adapter["id"])
            if kids and not force:
                raise ConflictError(
                    f"{adapter['ref']} has {len(kids)} child version(s) in its lineage",
                    "remove the children first, or pass --force to cut their lineage edges")
            self.db.execute("DELETE FROM edges WHERE parent = ?", [adapter["id"]])
            self.db.execute("UPDATE runs SET output_id = NULL WHERE output_id = ?", [adapter["id"]])
            self.db.execute("DELETE FROM adapters WHERE id = ?", [adapter["id"]])
            self.db.execute("DELETE FROM nodes WHERE id = ?", [adapter["id"]])
            doomed = self._move_to_trash(Path(adapter["path"]))
        if doomed:
            store_mod.shutil.rmtree(doomed, ignore_errors=True)
        return adapter

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
        adapter = self.resolve(ref)
        with self.write():
            self.db.execute(
                "INSERT INTO aliases (name, alias, adapter_id, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET adapter_id = excluded.adapter_id, "
                "created_at = excluded.created_at",
                [adapter["name"], alias, adapter["id"], now()])
        return self.resolve(f"{adapter['name']}@{alias}")

    def untag(self, ref: str, alias: str) -> None:
        check_name(alias, "alias")
        adapter = self.resolve(ref)
        with self.write():
            cur = self.db.execute("DELETE FROM aliases WHERE name = ? AND alias = ? AND adapter_id = ?",
                                  [adapter["name"], alias, adapter["id"]])
            if cur.rowcount == 0:
                raise NotFoundError(f"{adapter['ref']} has no alias {alias!r}",
                                    f"see its aliases with `adaptr show {adapter['ref']}`")

    # -- lineage ---------------------------------------------------------------------------

    _WALK = """
        WITH RECURSIVE walk(child, parent, relation, params, depth) AS (
            SELECT child, parent, relation, params, 1 FROM edges WHERE {start} = :id
            UNION
            SELECT e.child, e.parent, e.relation, e.params, walk.depth + 1
            FROM edges e JOIN walk ON e.{start} = walk.{step} WHERE walk.depth < 10000
        )
        SELECT child, parent, relation, params, MIN(depth) AS depth FROM walk
        GROUP BY child, parent ORDER BY depth, child, parent"""

    def ancestors(self, node_id: int) -> list[dict]:
        """Edges from ``node_id`` up to its roots, nearest first."""
        return self._walk(self._WALK.format(start="child", step="parent"), node_id)

    def descendants(self, node_id: int) -> list[dict]:
        """Edges from ``node_id`` down to its leaves, nearest first."""
        return self._walk(self._WALK.format(start="parent", step="child"), node_id)

    def _walk(self, sql: str, node_id: int) -> list[dict]:
        edges = self.query(sql, {"id": node_id})
        labels = self._labels({e["child"] for e in edges} | {e["parent"] for e in edges})
        for edge in edges:
            edge["params"] = _json(edge["params"])
            edge["child_ref"], edge["child_kind"] = labels[edge["child"]]
            edge["parent_ref"], edge["parent_kind"] = labels[edge["parent"]]
        return edges

    def _labels(self, ids: set[int]) -> dict[int, tuple[str, str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = f"""SELECT n.id, n.kind, a.name, a.version, b.name FROM nodes n
                  LEFT JOIN adapters a ON a.id = n.id LEFT JOIN bases b ON b.id = n.id
                  WHERE n.id IN ({marks})"""
        return {nid: ((format_ref(an, av) if kind == "adapter" else bn), kind)
                for nid, kind, an, av, bn in self.db.execute(sql, list(ids))}

    # -- runs, checkpoints, metrics --------------------------------------------------------

    def create_run(self, *, stage: str, request: dict, config: dict, executor: str = "local",
                   gpus: str | None = None, status: str = "queued") -> dict:
        run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        run_dir = self.root / "runs" / run_id
        run_dir.mkdir(parents=True)
        with self.write():
            self.db["runs"].insert({
                "id": run_id, "stage": stage, "status": status, "executor": executor,
                "request": json.dumps(request), "config": json.dumps(config),
                "run_dir": self.store.relative(run_dir), "gpus": gpus, "created_at": now(),
            })
        return self.run(run_id)

    def run(self, run_id: str) -> dict:
        rows = self.query("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFoundError(f"unknown run {run_id!r}", "list runs with `adaptr runs`")
        return self._run_dict(rows[0])

    def runs(self, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        sql = "SELECT * FROM runs" + (" WHERE status = ?" if status else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [self._run_dict(r) for r in self.query(sql, [status] if status else [])]

    def _run_dict(self, row: dict) -> dict:
        out = dict(row)
        out["run_dir"] = str(self.store.absolute(row["run_dir"]))
        out["request"] = _json(row["request"])
        out["config"] = _json(row["config"])
        out["output_ref"] = None
        if row["output_id"]:
            label = self._labels({row["output_id"]}).get(row["output_id"])
            out["output_ref"] = label[0] if label else None
        return out

    def update_run(self, run_id: str, **fields: Any) -> dict:
        for key in ("request", "config"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        with self.write():
            self.db["runs"].update(run_id, fields)
        return self.run(run_id)

    def record_checkpoint(self, run_id: str, step: int, path: Path, sha256: str) -> dict:
        row = {"run_id": run_id, "step": step, "path": self.store.relative(path), "sha256": sha256,
               "created_at": now()}
        with self.write():
            self.db["checkpoints"].insert(row, replace=True)
        return {**row, "path": str(path)}

    def checkpoints(self, run_id: str) -> list[dict]:
        rows = self.query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step DESC", [run_id])
        for row in rows:
            row["path"] = str(self.store.absolute(row["path"]))
        return rows

    def add_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        rows = [{"run_id": run_id, "step": step, "name": k, "value": float(v)}
                for k, v in values.items() if isinstance(v, (int, float))]
        if rows:
            with self.write():
                self.db["metrics"].insert_all(rows, replace=True)

    def metrics(self, run_id: str, name: str | None = None) -> list[dict]:
        sql = "SELECT step, name, value FROM metrics WHERE run_id = ?"
        params: list = [run_id]
        if name:
            sql, params = sql + " AND name = ?", params + [name]
        return self.query(sql + " ORDER BY name, step", params)
