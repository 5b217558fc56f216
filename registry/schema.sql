-- The adaptr registry schema (SQLite), generated from adaptr/migrations.py.
-- Do not edit: change the migrations, then run `python -m adaptr.schema`.

CREATE TABLE "_sqlite_migrations" (
    "id" INTEGER PRIMARY KEY,
    "migration_set" TEXT,
    "name" TEXT,
    "applied_at" TEXT
);

CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");

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
        , job_id TEXT);

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

CREATE TABLE pending_artifacts (
    path TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE base_files (
    base_id INTEGER NOT NULL REFERENCES bases(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (base_id, path)
);

CREATE TABLE run_inputs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, node_id)
);

CREATE INDEX run_inputs_node ON run_inputs(node_id);

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

CREATE TABLE run_journals (run_id TEXT PRIMARY KEY REFERENCES runs(id), "offset" INTEGER NOT NULL DEFAULT 0, open INTEGER NOT NULL DEFAULT 1);
