"""`adaptr resume` on the testloop stage: exactness after SIGKILL, checkpoint choice, refusals."""

from __future__ import annotations

from pathlib import Path

from adaptr import jobs, run_stage
from conftest import dump_registry, run_cli

from .helpers import killed_after_checkpoint, loop_request, losses, numbers_file, wait_until


def resume_cli(registry, *args):
    return run_cli("resume", *args, registry=registry)


def test_resume_after_sigkill_is_bit_identical(loop_registry, tmp_path, monkeypatch):
    data = numbers_file(tmp_path)
    reference = run_stage(loop_registry, loop_request(data, steps=20, save_steps=5))
    killed = killed_after_checkpoint(loop_registry, loop_request(data, steps=20, save_steps=5), 10,
                                     monkeypatch)
    assert max(losses(loop_registry, killed["id"])) >= 10

    proc = resume_cli(loop_registry, killed["id"])
    assert proc.returncode == 0, proc.stderr
    resumed = loop_registry.run(proc.stdout.strip())
    assert resumed["status"] == "succeeded"
    assert (resumed["resumed_from_run"], resumed["resumed_from_step"]) == (killed["id"], 10)
    assert sorted(losses(loop_registry, resumed["id"])) == list(range(11, 21))
    expected = {s: v for s, v in losses(loop_registry, reference["id"]).items() if s > 10}
    assert losses(loop_registry, resumed["id"]) == expected  # float equality: bit-identical

    version = loop_registry.resolve(resumed["output_ref"])
    assert version["stage"] == "testloop" and version["run_id"] == resumed["id"]
    assert version["record"]["resumed_from"]["text"] == f"resumed from checkpoint 10 of run {killed['id']}"
    assert version["record"]["resumed_from"]["inexact"] is False
    reference_version = loop_registry.resolve(reference["output_ref"])
    assert (Path(version["path"]) / "model.pt").read_bytes() == (Path(reference_version["path"]) / "model.pt").read_bytes()
    assert not list((loop_registry.root / "tmp").iterdir())  # the private copy is gone


def test_resume_skips_a_corrupt_newest_checkpoint_and_reports_it(loop_registry, tmp_path, monkeypatch):
    data = numbers_file(tmp_path)
    killed = killed_after_checkpoint(loop_registry, loop_request(data, steps=12, save_steps=3), 9,
                                     monkeypatch)
    newest = loop_registry.checkpoints(killed["id"])[0]
    assert newest["step"] == 9
    (Path(newest["path"]) / "optimizer.pt").write_bytes(b"not what was saved")

    proc = resume_cli(loop_registry, killed["id"], "--detach")
    assert proc.returncode == 0, proc.stderr
    resumed = jobs.wait(loop_registry, proc.stdout.strip(), timeout=60)
    assert resumed["status"] == "succeeded" and resumed["resumed_from_step"] == 6
    assert "skipping checkpoint 9" in "\n".join(jobs.tail(resumed, 50))
    [skipped] = loop_registry.resolve(resumed["output_ref"])["record"]["resumed_from"]["skipped"]
    assert skipped["step"] == 9 and "optimizer.pt does not match" in skipped["reason"]


def test_resume_from_a_chosen_checkpoint_and_of_a_cancelled_run(loop_registry, tmp_path):
    data = numbers_file(tmp_path)
    run = jobs.submit(loop_registry, loop_request(data, steps=400, save_steps=2, sleep=0.02))
    wait_until(lambda: loop_registry.run(run["id"])["progress_step"] >= 5, what="progress")
    jobs.cancel(loop_registry, run["id"])
    assert jobs.wait(loop_registry, run["id"], timeout=30)["status"] == "cancelled"

    proc = resume_cli(loop_registry, run["id"], "--checkpoint", "4", "--set", "steps=6", "--inexact")
    assert proc.returncode == 0, proc.stderr
    resumed = loop_registry.run(proc.stdout.strip())
    assert resumed["resumed_from_step"] == 4 and sorted(losses(loop_registry, resumed["id"])) == [5, 6]
    record = loop_registry.resolve(resumed["output_ref"])["record"]["resumed_from"]
    assert record["inexact"] is True and record["changes"] == ["config steps 400 -> 6"]
    assert resumed["config"]["steps"] == 6


def _refused(registry, args, message):
    before = dump_registry(registry.root)
    proc = resume_cli(registry, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "hint:" in proc.stderr
    assert message in proc.stderr, proc.stderr
    assert dump_registry(registry.root) == before


def test_resume_refusals_change_nothing(loop_registry, tmp_path, monkeypatch):
    data = numbers_file(tmp_path)
    done = run_stage(loop_registry, loop_request(data, steps=4, save_steps=2))
    _refused(loop_registry, [done["id"]], f"run {done['id']} succeeded and made testloop-v1")
    _refused(loop_registry, ["20990101-000000-beef"], "unknown run '20990101-000000-beef'")

    killed = killed_after_checkpoint(loop_registry, loop_request(data, steps=20, save_steps=2), 4,
                                     monkeypatch)
    _refused(loop_registry, [killed["id"], "--checkpoint", "3"], "has no checkpoint at step 3")
    _refused(loop_registry, [killed["id"], "--set", "lr=0.5"], "config lr 0.01 -> 0.5")
    data.write_text(data.read_text() + "3.0\n")
    _refused(loop_registry, [killed["id"]], f"data {data} changed (sha256")
    for checkpoint in loop_registry.checkpoints(killed["id"]):
        (Path(checkpoint["path"]) / "rng_state.pth").unlink()
    _refused(loop_registry, [killed["id"], "--inexact"], "no checkpoint of run")


def test_changed_data_resumes_with_inexact_and_is_recorded(loop_registry, tmp_path, monkeypatch):
    data = numbers_file(tmp_path)
    killed = killed_after_checkpoint(loop_registry, loop_request(data, steps=6, save_steps=3), 3,
                                     monkeypatch)
    data.write_text("1.5\n")
    proc = resume_cli(loop_registry, killed["id"], "--inexact")
    assert proc.returncode == 0, proc.stderr
    resumed = loop_registry.run(proc.stdout.strip())
    record = loop_registry.resolve(resumed["output_ref"])["record"]["resumed_from"]
    assert record["inexact"] is True and record["changes"][0].startswith(f"data {data} changed")
    again = resume_cli(loop_registry, killed["id"])
    assert again.returncode == 2 and f"already resumed by run {resumed['id']}" in again.stderr
