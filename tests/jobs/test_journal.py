"""A run's process that reports through its journal (what a SLURM job does, adaptr/journal.py),
without a cluster: the real worker (`adaptr _worker RUN`) in a subprocess with $ADAPTR_JOURNAL
set never opens adaptr.db (any attempt raises), and the host's next look ingests the run, once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from adaptr import jobs, journal
from conftest import dump_registry, run_cli
from jobs.conftest import loop_registry, testloop  # noqa: F401  (fixtures)
from jobs.helpers import loop_request, numbers_file


def _rows(registry) -> list[str]:
    conn = sqlite3.connect(registry.db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_a_process_with_a_journal_cannot_open_the_registry(loop_registry, tmp_path):
    env = {**os.environ, journal.ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "import sys; from adaptr import Registry; Registry(sys.argv[1])",
                           str(loop_registry.db_path)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "must not open" in done.stderr and "adaptr.db" in done.stderr, done.stderr


def test_a_journaled_run_reaches_the_registry_on_the_next_look_and_only_once(loop_registry, tmp_path):
    registry = loop_registry
    run = jobs.record_queued(registry, loop_request(numbers_file(tmp_path), steps=4, save_steps=2))
    run = registry.update_run(run["id"], job_id="local-test")  # what a scheduler's launch records
    journal.prepare(registry, run)
    before = _rows(registry)

    done = run_cli("_worker", run["id"], registry=registry, env={journal.ENV: run["run_dir"]})
    assert done.returncode == 0, done.stderr
    assert "published testloop" in done.stderr
    # nothing reached adaptr.db; everything is in the run directory
    assert _rows(registry) == before and registry.run(run["id"])["status"] == "queued"
    lines = (registry.root / "runs" / run["id"] / journal.JOURNAL_NAME).read_text().splitlines()
    assert lines

    jobs.refresh(registry)  # the next look
    ended = registry.run(run["id"])
    assert ended["status"] == "succeeded" and ended["output_ref"] == "testloop-v1", ended["error"]
    assert [c["step"] for c in registry.checkpoints(run["id"])] == [4, 2]
    assert [m["step"] for m in registry.metrics(run["id"], "loss")] == [1, 2, 3, 4]
    registry.verified(registry.resolve("testloop-v1"))  # files first, row last: the row's files are whole

    # a crash before the offset was recorded: the whole journal applied again changes nothing
    after = dump_registry(registry.root)
    with registry.write():
        registry.conn.execute('UPDATE run_journals SET "offset" = 0, open = 1')
    jobs.refresh(registry)
    assert dump_registry(registry.root) == after

    # a journal can publish only what its job moved into its own publish/
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "adapter_model.safetensors").write_bytes(b"x")
    entry = {"op": "publish_adapter", "staged": str(outside),
             "kwargs": {"name": "rogue", "base": "toy", "stage": "testloop", "run_id": run["id"]}}
    with open(registry.root / "runs" / run["id"] / journal.JOURNAL_NAME, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    jobs.refresh(registry)
    assert outside.is_dir() and registry.query("SELECT id FROM adapters WHERE name = 'rogue'") == []
