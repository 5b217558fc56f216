"""The registry schema, as sqlite-utils migrations. Never edit a released migration: add one.

A migration is a function ``mNNN_what(db)`` decorated with ``@migration``; they run in the order
they are defined, each in one transaction, recorded in ``_sqlite_migrations`` (set ``adaptr``).
The sqlite-utils ``Migrations`` object (``migrations.migrations``) is built on first use, so that
opening an up-to-date registry, which only compares names, never imports sqlite-utils.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

MIGRATION_SET = "adaptr"
APPLICATION_ID = 0x41445054  # "ADPT", in SQLite's application_id header field (see dbfile.py)
_steps: list[Callable] = []


def migration(fn: Callable) -> Callable:
    _steps.append(fn)
    return fn


def names() -> list[str]:
    return [fn.__name__ for fn in _steps]


def pending_names(conn: sqlite3.Connection) -> list[str]:
    """Migrations not yet applied to the database behind ``conn`` (read-only)."""
    try:
        applied = {row[0] for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET])}
    except sqlite3.OperationalError:  # no migrations table yet: a new database
        applied = set()
    return [name for name in names() if name not in applied]


def __getattr__(attribute: str):
    if attribute != "migrations":
        raise AttributeError(attribute)
    from ._sqlite import Migrations

    built = Migrations(MIGRATION_SET)
    for fn in _steps:
        built()(fn)
    globals()["migrations"] = built
    return built


def _run_script(db, script: str) -> None:
    # sqlite3's executescript() commits the open transaction first; run statement by statement
    # so a migration stays inside the transaction that records it.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migration
def m001_initial(db):
    _run_script(db, """
        CREATE TABLE nodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('base', 'adapter'))
        );
        CREATE TABLE bases (
            id INTEGER PRIMARY KEY REFERENCES nodes(id),
            name TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            source_kind TEXT NOT NULL CHECK (source_kind IN ('local', 'hub', 'derived')),
            revision TEXT,
            path TEXT,
            owned INTEGER NOT NULL DEFAULT 0,
            config_sha256 TEXT,
            tokenizer_sha256 TEXT,
            num_parameters INTEGER,
            dtype TEXT,
            architecture TEXT,
            sha256 TEXT,
            record TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE adapters (
            id INTEGER PRIMARY KEY REFERENCES nodes(id),
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            base_id INTEGER NOT NULL REFERENCES bases(id),
            stage TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'ready',
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            run_id TEXT REFERENCES runs(id),
            config TEXT NOT NULL DEFAULT '{}',
            record TEXT NOT NULL DEFAULT '{}',
            metrics TEXT NOT NULL DEFAULT '{}',
            hub_repo TEXT,
            hub_commit TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (name, version)
        );
        CREATE INDEX adapters_created ON adapters(created_at, id);
        CREATE INDEX adapters_base ON adapters(base_id, created_at, id);
        CREATE INDEX adapters_stage ON adapters(stage, created_at, id);
        -- the highest version ever given to each name: a removed version's number is never reused
        CREATE TABLE adapter_names (
            name TEXT PRIMARY KEY,
            last_version INTEGER NOT NULL
        );
        CREATE TABLE edges (
            child INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            parent INTEGER NOT NULL REFERENCES nodes(id),
            relation TEXT NOT NULL CHECK (relation IN ('continued', 'merged', 'stacked')),
            params TEXT NOT NULL DEFAULT '{}',
            position INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (child, parent)
        );
        CREATE INDEX edges_parent ON edges(parent);
        CREATE TABLE aliases (
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            adapter_id INTEGER NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, alias)
        );
        CREATE INDEX aliases_adapter ON aliases(adapter_id);
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            stage TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('queued', 'running', 'succeeded', 'failed', 'interrupted', 'cancelled')),
            executor TEXT NOT NULL DEFAULT 'local',
            request TEXT NOT NULL DEFAULT '{}',
            config TEXT NOT NULL DEFAULT '{}',
            run_dir TEXT NOT NULL,
            pid INTEGER,
            host TEXT,
            gpus TEXT,
            progress_step INTEGER NOT NULL DEFAULT 0,
            progress_total INTEGER,
            output_kind TEXT,
            output_id INTEGER REFERENCES nodes(id) ON DELETE SET NULL,
            resumed_from_run TEXT REFERENCES runs(id),
            resumed_from_step INTEGER,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT
        );
        CREATE INDEX runs_status ON runs(status);
        CREATE INDEX runs_created ON runs(created_at);
        CREATE TABLE checkpoints (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, step)
        );
        CREATE TABLE metrics (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (run_id, name, step)
        );
        """)


@migration
def m002_identity_and_integrity(db):
    """The file says it is adaptr's; publishes announce themselves; per-file base records; run inputs.

    ``application_id`` (the header field SQLite reserves for this) and the migrations table
    together identify a registry (see dbfile.py).
    """
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    _run_script(db, """
        -- an artifact directory about to be placed, recorded (and committed) before it is: a
        -- directory under adapters/ or bases/ with no row is removed by `adaptr gc` only when
        -- it is listed here, that is, only when this database knows it for a crash leftover
        CREATE TABLE pending_artifacts (
            path TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        -- every file of a base with local weights, as it was when registered: a file is
        -- re-hashed in full only when its size or mtime changed (and always by `adaptr doctor`)
        CREATE TABLE base_files (
            base_id INTEGER NOT NULL REFERENCES bases(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (base_id, path)
        );
        -- the versions and bases a run reads: none of them can be removed while it is active
        CREATE TABLE run_inputs (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            PRIMARY KEY (run_id, node_id)
        );
        CREATE INDEX run_inputs_node ON run_inputs(node_id)
        """)


@migration
def m003_evaluations(db):
    # One row per (node, eval set, evaluator, settings): an evaluation is computed once. Results
    # of a removed version go with it; a removed reference leaves its ref text behind.
    _run_script(db, """
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            evaluator TEXT NOT NULL,
            eval_set_sha256 TEXT NOT NULL,
            settings_sha256 TEXT NOT NULL,
            eval_set TEXT NOT NULL DEFAULT '{}',
            settings TEXT NOT NULL DEFAULT '{}',
            reference_id INTEGER REFERENCES nodes(id) ON DELETE SET NULL,
            reference_ref TEXT,
            tokenizer_sha256 TEXT,
            run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
            source TEXT NOT NULL DEFAULT 'local',
            record TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            UNIQUE (node_id, eval_set_sha256, evaluator, settings_sha256)
        );
        CREATE INDEX evaluations_key ON evaluations(eval_set_sha256, evaluator, settings_sha256);
        CREATE TABLE eval_metrics (
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value REAL,
            higher_is_better INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (evaluation_id, name)
        );
        CREATE INDEX eval_metrics_name ON eval_metrics(name, evaluation_id);
        CREATE TABLE eval_outputs (
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            row_number INTEGER,
            prompt TEXT,
            output TEXT NOT NULL,
            expected TEXT,
            score REAL,
            PRIMARY KEY (evaluation_id, position)
        );
        """)


@migration
def m004_record_format_2(db):
    """Rewrite the records of the first release into the one declared schema (adaptr/records.py):
    weighted merges stored their library versions as ``library_versions`` and derived bases
    their merge details at the top level, so the drift check and the TUI missed them."""
    import json

    from .records import base_record, to_dict, version_record

    for table, read in (("adapters", version_record), ("bases", base_record)):
        for node_id, text in db.execute(f"SELECT id, record FROM {table}").fetchall():
            db.execute(f"UPDATE {table} SET record = ? WHERE id = ?",
                       [json.dumps(to_dict(read(json.loads(text or "{}")))), node_id])


@migration
def m005_run_job_id(db):
    """Runs started through a scheduler (the ``slurm`` executor) record the scheduler's job id."""
    db.execute("ALTER TABLE runs ADD COLUMN job_id TEXT")


@migration
def m006_run_journals(db):
    """Runs on other hosts (the ``slurm`` executor) report through a journal in their run
    directory; the registry's host ingests it (adaptr/journal.py). ``offset`` is how far it has
    been applied; ``open`` turns 0 once the job wrote its last entry."""
    db.execute("CREATE TABLE run_journals (run_id TEXT PRIMARY KEY REFERENCES runs(id), "
               "\"offset\" INTEGER NOT NULL DEFAULT 0, open INTEGER NOT NULL DEFAULT 1)")
