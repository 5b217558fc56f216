"""Opening ``adaptr.db``: only a file that proves it is an adaptr registry is ever written to.

A registry says it is one twice over: SQLite's ``application_id`` header field holds
:data:`APPLICATION_ID`, and the ``_sqlite_migrations`` table lists adaptr's migrations (a registry
made before the id existed is recognised by that table alone, and gets the id when it is
upgraded). Everything is decided with reads only, before any pragma that writes, so an empty,
foreign or newer file is refused byte for byte unchanged. Only :func:`create` makes a new file.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from . import migrations as migrations_mod
from .errors import ConflictError, IntegrityError, NotFoundError, UsageError

APPLICATION_ID = migrations_mod.APPLICATION_ID
_RESTORE = "restore adaptr.db from a backup; adaptr has changed nothing"


def busy_timeout_ms() -> int:
    """How long a write waits for another writer: ``ADAPTR_BUSY_TIMEOUT`` seconds, default 30."""
    raw = os.environ.get("ADAPTR_BUSY_TIMEOUT")
    try:
        seconds = float(raw) if raw else 30.0
    except ValueError:
        raise UsageError(f"ADAPTR_BUSY_TIMEOUT={raw!r} is not a number of seconds",
                         "set it to e.g. 30, or unset it") from None
    return max(0, int(seconds * 1000))


def open_existing(db_path: Path) -> sqlite3.Connection:
    """A connection to an existing registry file, after checking that it is one."""
    _refuse_in_journal_process(db_path)
    if not db_path.is_file():
        raise NotFoundError(f"no registry at {db_path}", f"run `adaptr init {db_path.parent}` first")
    _check_header(db_path)
    conn = _connect(db_path)
    try:
        _check_identity(conn, db_path)
    except BaseException:
        conn.close()
        raise
    return conn


def create(db_path: Path) -> sqlite3.Connection:
    """Make a new registry at ``db_path`` (unless one appeared there meanwhile) and open it.

    The file is built complete under a temporary name and linked into place, which fails if
    ``db_path`` exists: of several processes creating one registry at once, one file wins and
    nobody ever opens a half-made one.
    """
    from ._sqlite import Database

    _refuse_in_journal_process(db_path)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        conn = sqlite3.connect(str(tmp))
        migrations_mod.migrations.apply(Database(conn, execute_plugins=False))
        conn.close()
        try:
            os.link(tmp, db_path)
        except FileExistsError:
            pass  # another process made it first: open theirs
    finally:
        tmp.unlink(missing_ok=True)
    return open_existing(db_path)


def _refuse_in_journal_process(db_path: Path) -> None:
    """A process of a job on another host (``$ADAPTR_JOURNAL`` set) must never open adaptr.db:
    SQLite's WAL needs locks and shared memory that network filesystems do not give."""
    if os.environ.get("ADAPTR_JOURNAL"):
        raise ConflictError(f"this process reports through the journal in {os.environ['ADAPTR_JOURNAL']} "
                            f"and must not open {db_path}",
                            "the registry's host ingests the journal; see docs/jobs.md")


def _connect(db_path: Path) -> sqlite3.Connection:
    timeout_ms = busy_timeout_ms()
    conn = sqlite3.connect(str(db_path), timeout=timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    return conn


def _check_header(db_path: Path) -> None:
    # Never open() the file itself: closing any descriptor of it drops every POSIX lock this
    # process holds on it, including those of SQLite connections in other threads (the TUI's),
    # which corrupts a database in WAL mode (sqlite.org/howtocorrupt.html, section 2.2).
    if db_path.stat().st_size == 0:
        raise UsageError(f"{db_path} is not an adaptr registry (any more): the file is empty", _RESTORE)


def _check_identity(conn: sqlite3.Connection, db_path: Path) -> None:
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        applied = _applied_migrations(conn)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        if "file is not a database" in str(exc):
            raise UsageError(f"{db_path} is not an adaptr registry: it is not an SQLite database",
                             "point --registry at a directory made by `adaptr init`") from None
        raise UsageError(f"{db_path} is not an adaptr registry, or is damaged ({exc})", _RESTORE) from None
    ours = application_id == APPLICATION_ID or (application_id == 0 and applied)
    if not ours:
        raise UsageError(f"{db_path} is not an adaptr registry: it is another program's SQLite "
                         f"database (application_id {application_id:#x})",
                         "point --registry at a directory made by `adaptr init`")
    if not applied:
        raise UsageError(f"{db_path} says it is an adaptr registry but has no migrations table", _RESTORE)
    unknown = sorted(set(applied) - set(migrations_mod.names()))
    if unknown:
        raise UsageError(f"{db_path} was written by a newer adaptr (it has migration {unknown[0]})",
                         "upgrade adaptr (`pip install -U adaptr`) to open it")


def _applied_migrations(conn: sqlite3.Connection) -> list[str]:
    try:
        return [row[0] for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
            [migrations_mod.MIGRATION_SET])]
    except sqlite3.OperationalError:  # no such table
        return []


def damaged_database_error(exc: sqlite3.DatabaseError) -> IntegrityError | None:
    """The one-line error for SQLite finding the file damaged mid-command (None: not that)."""
    text = str(exc)
    if not any(word in text for word in ("malformed", "not a database", "disk I/O", "corrupt")):
        return None
    return IntegrityError(f"the registry database is damaged ({text})",
                          "restore adaptr.db from a backup (`sqlite3 adaptr.db .recover` may save its rows)")


# -- who holds the lock --------------------------------------------------------------------

# SQLite in WAL mode takes its write lock as a POSIX lock on byte 120 of the -shm file
# (WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK in sqlite3.c); Linux lists such locks in /proc/locks.
_WAL_WRITE_LOCK_BYTE = 120


def locked_error(db_path: Path) -> ConflictError:
    """The one-line error for a write that waited past the busy timeout, naming the holder."""
    waited = busy_timeout_ms() / 1000
    holder = lock_holder(db_path)
    if holder is None:
        who, hint = "another process", "wait for it to finish; `adaptr runs` lists running runs"
    else:
        pid, command = holder
        who = f"process {pid} ({command})" if command else f"process {pid}"
        hint = f"wait for it to finish, or stop it (`kill {pid}`)"
    return ConflictError(f"the registry {db_path.parent} is locked by {who}: gave up after {waited:g}s "
                         "waiting to write", hint)


def lock_holder(db_path: Path) -> tuple[int, str] | None:
    """``(pid, command line)`` of the process holding the registry's write lock (Linux), or None."""
    try:
        inode = os.stat(f"{db_path}-shm").st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 4242 08:01:1234 120 120"
        if len(fields) >= 8 and fields[1] == "POSIX" and fields[3] == "WRITE":
            if fields[5].rsplit(":", 1)[-1] == str(inode) and fields[6] == str(_WAL_WRITE_LOCK_BYTE):
                pid = int(fields[4])
                return pid, _command_line(pid)
    return None


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    words = [Path(words[0]).name, *words[1:]] if words else words
    return " ".join(words)[:120]
