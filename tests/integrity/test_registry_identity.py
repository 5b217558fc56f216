"""The database knows it is adaptr's; nothing is lost when it is emptied, replaced or restored.

Only `adaptr init` (and the demo) create a registry. Every other command on an empty, foreign or
newer file refuses and leaves it byte for byte as it was; `gc` removes only what this database
knows for its own leftovers.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from conftest import run_cli

from adaptr import Registry
from adaptr.dbfile import APPLICATION_ID

from .conftest import file_digest, tree_listing
from .test_verify_before_use import assert_refused

READ_AND_WRITE_COMMANDS = [["ls"], ["show", "sft-v1"], ["doctor"], ["gc"], ["gc", "--yes"], ["runs"],
                           ["tag", "sft-v1", "prod"], ["base", "ls"], ["init"]]


@pytest.mark.parametrize("args", READ_AND_WRITE_COMMANDS, ids=" ".join)
def test_an_emptied_database_is_refused_and_every_artifact_kept(args, reg_dir):
    (reg_dir / "adaptr.db").write_bytes(b"")
    for stale in reg_dir.glob("adaptr.db-*"):
        stale.unlink()
    before = tree_listing(reg_dir)
    argv = args + [str(reg_dir)] if args == ["init"] else args
    line = assert_refused(run_cli(*argv, registry=reg_dir))
    assert "is not an adaptr registry (any more): the file is empty" in line
    assert "restore adaptr.db from a backup" in line
    assert tree_listing(reg_dir) == before  # adapters, bases, runs: all still there


def _foreign_db(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("args", [["ls"], ["doctor"], ["gc"], ["tag", "a-v1", "x"], ["init"]], ids=" ".join)
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(args, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    db = _foreign_db(other / "adaptr.db")
    digest = file_digest(db)
    argv = args + [str(other)] if args == ["init"] else args
    line = assert_refused(run_cli(*argv, registry=db))
    assert "is not an adaptr registry: it is another program's SQLite database" in line
    assert file_digest(db) == digest and sorted(p.name for p in other.iterdir()) == ["adaptr.db"]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    (tmp_path / "adaptr.db").write_bytes(b"\x00garbage" * 100)
    assert_refused(run_cli("ls", registry=tmp_path), "is not an adaptr registry: it is not an SQLite database")


def test_a_registry_written_by_a_newer_adaptr_is_refused(reg_dir):
    with Registry(reg_dir / "adaptr.db") as registry, registry.write():
        registry.conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                              "VALUES ('adaptr', 'm999_from_the_future', '2030-01-01')")
    before = file_digest(reg_dir / "adaptr.db")
    assert_refused(run_cli("ls", registry=reg_dir), "written by a newer adaptr", "m999_from_the_future",
                   "upgrade adaptr")
    assert file_digest(reg_dir / "adaptr.db") == before


def test_a_registry_of_the_previous_release_is_upgraded_in_place(tmp_path):
    """Made before application_id existed: known by its migrations table, and upgraded."""
    from adaptr import migrations
    from adaptr._sqlite import Database

    root = tmp_path / "old"
    root.mkdir()
    db = Database(sqlite3.connect(root / "adaptr.db"), execute_plugins=False)
    migrations.migrations.apply(db, stop_before="m002_identity_and_integrity")
    db.conn.close()
    assert run_cli("ls", registry=root).returncode == 0
    conn = sqlite3.connect(root / "adaptr.db")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    applied = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")}
    assert applied == set(migrations.names())


def test_init_refuses_a_directory_whose_database_is_missing(reg_dir):
    (reg_dir / "adaptr.db").unlink()
    before = tree_listing(reg_dir)
    assert_refused(run_cli("init", str(reg_dir)), "no adaptr.db", "restore adaptr.db from a backup")
    assert tree_listing(reg_dir) == before


# -- gc ------------------------------------------------------------------------------------


def test_gc_keeps_versions_whose_rows_an_older_backup_lacks(reg_dir, tmp_path):
    """Restore yesterday's adaptr.db: today's versions have no rows, and gc must not take them."""
    backup = tmp_path / "backup.db"
    with Registry(reg_dir / "adaptr.db") as registry:
        registry.conn.execute("VACUUM INTO ?", [str(backup)])
    newer = _new_version(reg_dir, "late")
    shutil.copy(backup, reg_dir / "adaptr.db")
    for stale in reg_dir.glob("adaptr.db-*"):
        stale.unlink()
    gc = run_cli("gc", "--yes", registry=reg_dir)
    assert gc.returncode == 0, gc.stderr
    assert f"kept {newer}" in gc.stdout and "not recorded in this registry" in gc.stdout
    assert (reg_dir / newer / "adapter_model.safetensors").is_file()
    # A new version of that name does not overwrite the kept directory: it takes the next number.
    again = _new_version(reg_dir, "late")
    assert again != newer and (reg_dir / newer).is_dir()


def _new_version(reg_dir, name) -> str:
    from lora_dirs import make_lora_dir

    out = reg_dir.parent / f"src-{name}-{len(list(reg_dir.parent.iterdir()))}"
    source = make_lora_dir(reg_dir / "models" / "tiny", out)
    proc = run_cli("import", str(source), "--base", "tiny", "--name", name, registry=reg_dir, check=True)
    version = proc.stdout.strip().rsplit("-v", 1)[1]
    return f"adapters/{name}/v{version}"


def test_gc_asks_for_yes_before_removing_many_items(reg_dir):
    for n in range(7):
        (reg_dir / "tmp" / f"import-999999{n}-abc").mkdir(parents=True)  # staging of dead processes
    before = tree_listing(reg_dir)
    proc = run_cli("gc", registry=reg_dir)
    assert_refused(proc, "gc would remove 7 items (listed above)", "adaptr gc --yes")
    assert proc.stdout.count("would remove tmp/import-") == 7
    assert tree_listing(reg_dir) == before and len(list((reg_dir / "tmp").iterdir())) == 7
    done = run_cli("gc", "--yes", registry=reg_dir)
    assert done.returncode == 0 and done.stdout.count("removed tmp/import-") == 7
    assert not any((reg_dir / "tmp").iterdir())


def test_gc_refuses_a_database_that_fails_sqlites_check(reg_dir):
    db = reg_dir / "adaptr.db"
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'adapters'").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size] = 0xFF  # the adapters table's b-tree page gets an invalid type
    db.write_bytes(bytes(data))
    (reg_dir / "tmp").mkdir(exist_ok=True)
    (reg_dir / "tmp" / "import-9999999-abc").mkdir()
    proc = run_cli("gc", "--yes", registry=reg_dir)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (reg_dir / "tmp" / "import-9999999-abc").is_dir()
