"""Concurrent writers and readers, and crashes between writing files and recording rows."""

import json
import sqlite3
import os
import subprocess
import sys
import textwrap
import time

from conftest import REPO, dump_registry, run_cli
from lora_dirs import make_lora_dir

import pytest

from adaptr import Registry, migrations
from adaptr.maintenance import collect_garbage

# Every process waits at a barrier so that all of them really run at once (process start-up
# alone takes longer than 200 transactions, which would otherwise run one process after another).
BARRIER = """
import os, pathlib, time
pathlib.Path(sys.argv[-1] + f"/ready-{os.getpid()}").touch()
while not os.path.exists(sys.argv[-1] + "/go"):
    time.sleep(0.001)
"""

WRITER = textwrap.dedent("""
    import json, sys
    from adaptr import Registry
    root, worker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reg = Registry(root + "/adaptr.db")
    seen, versions = [], []
""") + BARRIER + textwrap.dedent("""
    for i in range(rounds):
        with reg.write() as db:  # read, then write from what was read: the lost-update pattern
            (value,) = db.execute(
                "SELECT value FROM metrics WHERE run_id = 'counter' AND name = 'n'").fetchone()
            db.execute("UPDATE metrics SET value = ? WHERE run_id = 'counter' AND name = 'n'",
                       [value + 1])
        seen.append(int(value) + 1)
        if i % 20 == 0:
            with reg.store.staging("w") as staged:
                (staged / "weights").write_text(worker + str(i))
                version = reg.publish_adapter(staged, name="shared", base="tiny", stage="test")
            versions.append(version["version"])
            reg.tag(version["ref"], "w" + worker)
    print(json.dumps({"seen": seen, "versions": versions}))
""")

READER = textwrap.dedent("""
    import json, os, sys
    from adaptr import Registry
    root, stop = sys.argv[1], sys.argv[2]
    reg = Registry(root + "/adaptr.db")
    reads, last = 0, 0
""") + BARRIER + textwrap.dedent("""
    while not os.path.exists(stop) or reads < 20:
        (value,) = reg.db.execute(
            "SELECT value FROM metrics WHERE run_id = 'counter' AND name = 'n'").fetchone()
        assert value >= last, (value, last)
        last = value
        listed = reg.adapters(limit=50)
        if listed:
            reg.resolve("shared")
            reg.ancestors(listed[0]["id"])
        reads += 1
    print(json.dumps({"reads": reads}))
""")


def _spawn(script, *args):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_concurrent_read_then_write(registry, tmp_path):
    registry.add_base("tiny", source="test", source_kind="local")
    with registry.write() as db:
        db.execute("INSERT INTO runs (id, stage, status, run_dir, created_at) "
                   "VALUES ('counter', 'test', 'running', 'runs/counter', 'now')")
        db.execute("INSERT INTO metrics (run_id, step, name, value) VALUES ('counter', 0, 'n', 0)")
    root, stop, gate = registry.root, tmp_path / "stop", tmp_path / "gate"
    gate.mkdir()
    readers = [_spawn(READER, root, stop, gate) for _ in range(2)]
    writers = [_spawn(WRITER, root, w, 200, gate) for w in range(4)]
    try:
        deadline = time.monotonic() + 120
        while len(list(gate.iterdir())) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        (gate / "go").touch()
        results = []
        for proc in writers:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert "locked" not in err
            results.append(json.loads(out))
        stop.touch()
        for proc in readers:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert json.loads(out)["reads"] >= 20
    finally:
        stop.touch()
        (gate / "go").touch()
        for proc in readers + writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    seen = sorted(v for r in results for v in r["seen"])
    assert seen == list(range(1, 801))  # every increment landed exactly once
    versions = sorted(v for r in results for v in r["versions"])
    assert versions == list(range(1, 41))
    assert registry.count_adapters() == 40
    assert {a for r in registry.query("SELECT alias FROM aliases") for a in r.values()} == {"w0", "w1", "w2", "w3"}


def test_concurrent_first_open(tmp_path):
    """Several processes opening a brand-new registry at once all see one migrated schema."""
    root = tmp_path / "fresh"
    root.mkdir()
    script = "import sys; from adaptr import Registry; Registry.init(sys.argv[1]).close()"
    procs = [_spawn(script, root) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    reg = Registry(root / "adaptr.db")
    from adaptr.migrations import names

    assert [r["name"] for r in reg.query("SELECT name FROM _sqlite_migrations ORDER BY id")] == names()
    reg.close()


@pytest.fixture(scope="module")
def adapter_dir(tiny_base_dir, tmp_path_factory):
    return make_lora_dir(tiny_base_dir, tmp_path_factory.mktemp("crash") / "adapter")


@pytest.fixture
def cli_reg(tmp_path, tiny_base_dir):
    root = tmp_path / "registry"
    run_cli("init", str(root), check=True)
    run_cli("base", "add", "tiny", "--from", str(tiny_base_dir), registry=root, check=True)
    return root


def test_crash_after_placing_files(cli_reg, adapter_dir):
    crashed = run_cli("import", str(adapter_dir), "--base", "tiny", "--name", "crashy", registry=cli_reg,
                      env={"ADAPTR_TEST_CRASH_AT": "after-place"})
    assert crashed.returncode == 70
    leftover = cli_reg / "adapters" / "crashy" / "v1"
    assert (leftover / "adapter_model.safetensors").is_file()
    assert json.loads(run_cli("ls", "--json", registry=cli_reg, check=True).stdout) == []
    assert "no adapter versions" in run_cli("ls", registry=cli_reg, check=True).stderr

    before = dump_registry(cli_reg)
    dry = run_cli("gc", "--dry-run", registry=cli_reg, check=True)
    assert "would remove adapters/crashy/v1" in dry.stdout
    assert dump_registry(cli_reg) == before
    gc = run_cli("gc", registry=cli_reg, check=True)
    assert "removed adapters/crashy/v1" in gc.stdout and "removed adapters/crashy " in gc.stdout
    assert not (cli_reg / "adapters" / "crashy").exists()

    again = run_cli("import", str(adapter_dir), "--base", "tiny", "--name", "crashy", registry=cli_reg,
                    check=True)
    assert again.stdout.strip() == "crashy-v1"
    assert run_cli("doctor", registry=cli_reg).returncode == 0


def test_crash_while_staging(cli_reg, adapter_dir):
    crashed = run_cli("import", str(adapter_dir), "--base", "tiny", registry=cli_reg,
                      env={"ADAPTR_TEST_CRASH_AT": "after-stage"})
    assert crashed.returncode == 70
    (staged,) = (cli_reg / "tmp").iterdir()
    assert staged.name.startswith("import-")
    gc = run_cli("gc", registry=cli_reg, check=True)
    assert f"removed tmp/{staged.name}" in gc.stdout and "which is gone" in gc.stdout
    assert not staged.exists()


def test_gc_spares_live_work(registry):
    registry.add_base("tiny", source="test", source_kind="local")
    run = registry.create_run(stage="sft", request={}, config={}, status="running")
    checkpoint = registry.root / "runs" / run["id"] / "checkpoints" / "step-00000005"
    checkpoint.mkdir(parents=True)
    (registry.root / "bases" / "stray").mkdir(parents=True)
    stray = registry.root / "bases" / "stray"
    with registry.store.staging("live") as staged:  # this process is alive
        found = collect_garbage(registry)
        assert staged.exists() and checkpoint.exists()
    # A directory no row names and no crashed publish explains is listed, never removed.
    assert [(p.path, p.keep) for p in found] == [(stray, True)] and stray.exists()
    registry.update_run(run["id"], status="failed")
    assert [(p.path, p.keep) for p in collect_garbage(registry)] == [(stray, True), (checkpoint, False)]
    assert not checkpoint.exists() and stray.exists()
    assert [p.path for p in collect_garbage(registry)] == [stray]


def test_gc_keeps_recorded_checkpoints(registry):
    run = registry.create_run(stage="sft", request={}, config={}, status="succeeded")
    kept = registry.root / "runs" / run["id"] / "checkpoints" / "step-00000001"
    kept.mkdir(parents=True)
    registry.record_checkpoint(run["id"], 1, kept, "0" * 64)
    assert collect_garbage(registry) == [] and kept.exists()


def test_staging_pid_check_is_not_fooled_by_age(registry):
    registry.store.tmp.mkdir(parents=True, exist_ok=True)
    mine = registry.store.tmp / f"import-{os.getpid()}-abc123"
    mine.mkdir()
    os.utime(mine, (time.time() - 86400, time.time() - 86400))
    assert collect_garbage(registry) == [] and mine.exists()


def _posix_locks_on(path, pid) -> list[str]:
    inode = str(os.stat(path).st_ino)
    return [line for line in open("/proc/locks").read().splitlines()
            if line.split()[4] == str(pid) and line.split()[5].rsplit(":", 1)[-1] == inode]


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_opening_another_registry_keeps_this_processes_sqlite_locks(registry):
    """Opening a registry must not open() adaptr.db itself: closing that descriptor would drop
    every POSIX lock this process holds on the file, the SQLite read locks of other connections
    (the TUI's threads) included, and let another process change the file under them."""
    reader = sqlite3.connect(registry.db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM runs").fetchone()  # a read transaction: a shared lock
    held = _posix_locks_on(registry.db_path, os.getpid())
    assert held
    Registry(registry.db_path).close()
    assert _posix_locks_on(registry.db_path, os.getpid()) == held
    reader.close()
