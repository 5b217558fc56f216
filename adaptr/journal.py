"""Runs on other hosts report through a journal in their run directory, never through adaptr.db.

SQLite in WAL mode needs POSIX locks and shared memory that network filesystems (NFS, Lustre,
GPFS) do not give across hosts, so ``adaptr.db`` is only ever opened on the registry's host. For
an executor with ``journal=True`` (``slurm``), the host writes into the run directory before it
submits the job (:func:`prepare`):

- ``registry-snapshot.db``: a copy of the registry made with SQLite's backup API, which the
  job's processes load into memory (opened read-only and ``immutable``): their reads need no
  adaptr.db;
- an empty ``journal.jsonl``, and a ``run_journals`` row that says how far the host applied it.

Inside the job ``$ADAPTR_JOURNAL`` names that directory, :meth:`Registry.discover` returns a
:class:`JournalRegistry` (the snapshot in memory, plus every entry of the journal replayed), and
opening adaptr.db is refused outright (adaptr/dbfile.py). Each registry write the job makes
(:data:`JOURNALED`: ``create_run``, ``update_run``, ``end_run``, ``add_metrics``,
``record_checkpoint``, ...) is applied in memory and appended to the journal as one JSON line,
fsynced. A version to publish is moved into the directory's ``publish/`` and journaled; its row
is the host's to write.

:func:`ingest`, called by ``jobs.refresh`` (every ``adaptr runs``, ``logs``, ``cancel``,
``wait``, the TUI's poll), applies the complete new lines of every open journal, in order, to
adaptr.db, and records the offset after each. A publish entry is ``Registry.publish_adapter`` (or
``publish_base``) of the moved directory: files first, row last, as for a local run. An entry
applied twice (a crash between it and its offset) changes nothing: rows are replaced or set by
compare-and-set, a run already recorded is skipped, and a publish whose directory has already
moved is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterator

from . import store as store_mod
from .errors import AdaptrError, NotFoundError, UsageError
from .refs import check_adapter_name
from .registry import DB_NAME, Registry

ENV = "ADAPTR_JOURNAL"
JOURNAL_NAME = "journal.jsonl"
SNAPSHOT_NAME = "registry-snapshot.db"
PUBLISH_DIR = "publish"
JOURNALED = ("create_run", "update_run", "end_run", "start_queued_run", "add_metrics", "record_checkpoint",
             "prune_checkpoints")
PUBLISHES = ("publish_adapter", "publish_base")
CLOSE = "close"


# -- the registry's host -------------------------------------------------------------------


def prepare(registry: Registry, run: dict) -> Path:
    """Before the job is submitted: its journal, its row, and the snapshot its processes read."""
    directory = Path(run["run_dir"])
    with registry.write():
        registry.db["run_journals"].insert({"run_id": run["id"]}, replace=True)
    (directory / JOURNAL_NAME).touch()
    tmp = directory / f".{SNAPSHOT_NAME}.{os.getpid()}.tmp"
    copy = sqlite3.connect(str(tmp))
    try:
        registry.conn.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one plain file: no -wal, no -shm
    finally:
        copy.close()
    os.replace(tmp, directory / SNAPSHOT_NAME)
    return directory


def ingest(registry: Registry) -> int:
    """Apply what the open journals gained since the last look; return the entries applied."""
    if not registry.query("SELECT 1 FROM run_journals WHERE open = 1 LIMIT 1"):
        return 0
    applied = 0
    with _ingest_lock(registry):
        rows = registry.query('SELECT j.run_id, j."offset", r.run_dir FROM run_journals j '
                              'JOIN runs r ON r.id = j.run_id WHERE j.open = 1')
        for row in rows:
            path = registry.store.absolute(row["run_dir"]) / JOURNAL_NAME
            try:
                if path.stat().st_size <= row["offset"]:
                    continue
            except FileNotFoundError:
                continue
            for entry, end in _entries(path, row["offset"]):
                if entry is not None:
                    try:
                        _apply(registry, entry, path.parent / PUBLISH_DIR)
                        applied += 1
                    except AdaptrError as exc:  # the host's state moved on (e.g. resumed meanwhile)
                        print(f"[adaptr] journal of run {row['run_id']}: {entry.get('op')} not applied: {exc}",
                              file=sys.stderr)
                with registry.write():
                    registry.conn.execute('UPDATE run_journals SET "offset" = ?, open = ? WHERE run_id = ?',
                                          [end, 0 if entry and entry.get("op") == CLOSE else 1, row["run_id"]])
    return applied


@contextlib.contextmanager
def _ingest_lock(registry: Registry) -> Iterator[None]:
    """Of two looks at once on the host (``adaptr runs`` and the TUI), one ingests at a time."""
    registry.store.tmp.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry.store.tmp / "journal-ingest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _entries(path: Path, offset: int) -> Iterator[tuple[dict | None, int]]:
    """Each complete line from byte ``offset``: (entry, the offset after it); None for a line
    that is not JSON (reported, then skipped). A line still being written is left for later."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    position = offset
    for line in data.split(b"\n")[:-1]:
        position += len(line) + 1
        if not line.strip():
            continue
        try:
            yield json.loads(line), position
        except ValueError:
            print(f"[adaptr] {path}: a line at byte {position - len(line) - 1} is not JSON; skipped", file=sys.stderr)
            yield None, position


def _apply(registry: Registry, entry: dict, publish_dir: Path | None = None) -> None:
    """One journal entry, applied by the base class's methods (never journaled again). A
    publish takes only a directory in ``publish_dir`` (the journal's own ``publish/``)."""
    op, args, kwargs = entry["op"], list(entry.get("args", [])), dict(entry.get("kwargs", {}))
    if op == CLOSE:
        return
    if op in PUBLISHES:
        staged = Path(entry["staged"])
        if publish_dir is None or not staged.resolve().is_relative_to(publish_dir.resolve()):
            raise UsageError(f"a journal entry publishes {staged}, outside {publish_dir}",
                             "only what the job moved into its run directory's publish/ is published")
        if not staged.exists():  # published by an earlier look
            return
        kwargs["parents"] = [tuple(p) for p in kwargs.get("parents") or ()]
        getattr(Registry, op)(registry, staged, **kwargs)
        return
    if op not in JOURNALED:
        raise UsageError(f"unknown journal entry {op!r}", "the job ran another adaptr version than the host")
    if op == "create_run" and registry.query("SELECT 1 FROM runs WHERE id = ?", [kwargs["run_id"]]):
        return
    if op == "record_checkpoint":
        run_id, step, path, sha256 = args
        if registry.query("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ? AND sha256 = ?",
                          [run_id, step, sha256]):
            return  # recorded by an earlier look (keeps its time)
        args[2] = Path(path)
    getattr(Registry, op)(registry, *args, **kwargs)


# -- the job's processes -------------------------------------------------------------------


class JournalRegistry(Registry):
    """The registry as a job on another host sees it: a snapshot in memory, plus its journal;
    every write is applied in memory and appended to the journal. adaptr.db is never opened."""

    ingests = False

    def __init__(self, root: Path | str, directory: Path | str):  # noqa: super().__init__ opens adaptr.db
        self.root = Path(root).resolve()
        self.db_path = self.root / DB_NAME
        self.directory = Path(directory).resolve()
        self.journal_path = self.directory / JOURNAL_NAME
        snapshot = self.directory / SNAPSHOT_NAME
        if not snapshot.is_file():
            raise NotFoundError(f"no registry snapshot at {snapshot}", "the job's run directory was not prepared by "
                                "the registry's host; submit the run again")
        conn = sqlite3.connect(":memory:")
        source = sqlite3.connect(f"file:{snapshot}?mode=ro&immutable=1", uri=True)
        try:
            source.backup(conn)
        finally:
            source.close()
        conn.execute("PRAGMA foreign_keys = ON")
        self.conn = conn
        self._db = None
        self._published = []
        self.store = store_mod.ArtifactStore(self.root)
        self._offset = 0
        self._inside = 0
        self._replaying = False
        self._catch_up()

    @classmethod
    def from_env(cls, explicit: str | os.PathLike | None = None) -> "JournalRegistry":
        given = explicit or os.environ.get("ADAPTR_REGISTRY")
        if not given:
            raise UsageError(f"{ENV} is set but no registry is named", "set ADAPTR_REGISTRY to the registry's directory")
        root = Path(given)
        return cls(root.parent if root.name == DB_NAME else root, os.environ[ENV])

    def query(self, sql, params=()):
        self._catch_up()
        return super().query(sql, params)

    @contextlib.contextmanager
    def write(self):
        """As :meth:`Registry.write`; replaying the journal in memory is allowed on every rank
        (other ranks read what rank 0 wrote)."""
        if not self._replaying:
            with super().write() as db:
                yield db
            return
        if self.conn.in_transaction:
            yield self.db
            return
        self.conn.execute("BEGIN")
        try:
            yield self.db
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _catch_up(self) -> None:
        """Apply what other processes of the job (``begin``, rank 0, ``end``) journaled."""
        if self._inside:
            return
        try:
            if self.journal_path.stat().st_size <= self._offset:
                return
        except FileNotFoundError:
            return
        self._inside += 1
        self._replaying = True
        try:
            for entry, end in _entries(self.journal_path, self._offset):
                if entry is not None and entry["op"] not in PUBLISHES:  # those rows are the host's
                    with contextlib.suppress(AdaptrError):
                        _apply(self, entry)
                self._offset = end
        finally:
            self._inside -= 1
            self._replaying = False

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, default=_plain) + "\n").encode()
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            start = os.fstat(fd).st_size
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if start == self._offset:  # nobody else wrote meanwhile: this line is applied already
            self._offset = start + len(line)

    def close_journal(self) -> None:
        """The job's last entry: the host stops looking at this journal once it has applied it."""
        self._append({"op": CLOSE})

    def publish_adapter(self, staged: Path, **kwargs) -> dict:
        self._catch_up()
        check_adapter_name(kwargs["name"])
        self.base(kwargs["base"])
        return self._publish("publish_adapter", staged, kwargs)

    def publish_base(self, staged: Path, **kwargs) -> dict:
        self._catch_up()
        return self._publish("publish_base", staged, kwargs)

    def _publish(self, op: str, staged: Path, kwargs: dict) -> dict:
        """Move ``staged`` into the journal's directory and journal its publication."""
        kwargs = {**kwargs, "parents": [({"id": node["id"]}, relation, params)
                                        for node, relation, params in kwargs.get("parents") or ()]}
        body = json.loads(json.dumps(kwargs, default=_plain))  # refused here, before anything moves
        moved = self.directory / PUBLISH_DIR / f"{op.split('_')[1]}-{secrets.token_hex(4)}"
        self.store.place(Path(staged), moved)
        self._append({"op": op, "staged": str(moved), "kwargs": body})
        return {"id": None, "name": kwargs["name"],
                "ref": f"{kwargs['name']} (recorded when the registry's host next looks at the run)"}


def _journaled(name: str):
    method = getattr(Registry, name)

    @functools.wraps(method)
    def journaled(self: JournalRegistry, *args, **kwargs):
        if self._inside:  # replaying, or called from another journaled method
            return method(self, *args, **kwargs)
        json.dumps([args, kwargs], default=_plain)  # refused before anything is applied
        self._catch_up()
        self._inside += 1
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._inside -= 1
        if name == "create_run":
            kwargs = {**kwargs, "run_id": result["id"]}
        self._append({"op": name, "args": list(args), "kwargs": kwargs})
        return result

    return journaled


for _name in JOURNALED:
    setattr(JournalRegistry, _name, _journaled(_name))


def _plain(value: Any):
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be journaled")
