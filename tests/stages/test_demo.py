"""`adaptr demo` runs end to end in a fresh directory, through the real console script, and the
commands typed next in that directory (`adaptr ls`, `adaptr tui`) find its registry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

NO_REGISTRY_SET = {"ADAPTR_REGISTRY": ""}  # found the way a user's shell finds it: from the cwd


@pytest.mark.slow
def test_demo_then_ls_and_tui_in_the_same_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("demo", env=NO_REGISTRY_SET, cwd=work)
    assert proc.returncode == 0, proc.stderr
    # The tree `adaptr lineage tiny` draws: sft-v1 on the base, dpo-v1 continuing it, merged back.
    lines = proc.stdout.splitlines()
    sft = next(i for i, line in enumerate(lines) if "base of sft-v1" in line)
    assert "continued dpo-v1" in lines[sft + 1] and "on tiny · dpo" in lines[sft + 1]
    assert "merged dpo-v1-merged" in lines[sft + 2] and "derived base" in lines[sft + 2]
    assert (work / "registry" / "adaptr.db").exists()  # where `adaptr init` puts one
    assert (work / "adaptr-demo" / "preferences-heldout.jsonl").exists()
    assert "explore it: adaptr ls" in proc.stderr  # nothing to set: it is found from here

    listed = run_cli("ls", env=NO_REGISTRY_SET, cwd=work)
    assert listed.returncode == 0, listed.stderr
    assert "sft-v1" in listed.stdout and "dpo-v1" in listed.stdout
    (work / "sub" / "dir").mkdir(parents=True)
    below = run_cli("ls", "--json", env=NO_REGISTRY_SET, cwd=work / "sub" / "dir")  # like git
    assert below.returncode == 0, below.stderr
    assert "dpo-v1" in below.stdout

    _tui_shows_the_demo(work)

    again = run_cli("demo", env=NO_REGISTRY_SET, cwd=work)
    assert again.returncode == 2 and "already holds a registry" in again.stderr
    assert "--dir" in again.stderr


def _tui_shows_the_demo(work: Path) -> None:
    from tui.test_tmux import TMUX, TmuxSession

    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    exe = Path(sys.executable).parent / "adaptr"
    session = TmuxSession(["sh", "-c", f"cd '{work}' && exec '{exe}' tui"],
                          {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"})
    try:
        screen = session.wait_for("descendants", timeout=60)
        assert "dpo-v1" in screen and "sft-v1" in screen and "no adaptr registry" not in screen
        session.send("q")
        deadline = time.monotonic() + 15
        while session.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        session.kill()


def test_demo_refuses_a_directory_that_holds_a_registry(tmp_path):
    assert run_cli("init", str(tmp_path / "registry")).returncode == 0
    proc = run_cli("demo", "--dir", str(tmp_path), env=NO_REGISTRY_SET)
    assert proc.returncode == 2
    assert f"{tmp_path} already holds a registry" in proc.stderr and "hint:" in proc.stderr
    assert not (tmp_path / "adaptr-demo").exists()  # refused before anything was written
