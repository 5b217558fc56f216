"""The real `adaptr tui` in a real terminal: tmux runs it, sends keys and reads the screen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")


class TmuxSession:
    """A detached tmux session on its own server socket, so no other tmux server is involved."""

    def __init__(self, command: list[str], env: dict[str, str], width: int = 120, height: int = 36):
        self.socket = f"adaptr-test-{uuid.uuid4().hex[:8]}"
        # COLUMNS/LINES win over the pane's size in many libraries; pytest's may be set to 80x24.
        env = {**env, "COLUMNS": str(width), "LINES": str(height)}
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        self._tmux("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height),
                   *env_args, *command)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        # Never hand tmux pytest's captured stdio: a server started with it ignored sent keys.
        return subprocess.run([TMUX, "-L", self.socket, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main").stdout

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "main").returncode == 0

    def send(self, *keys: str) -> None:
        proc = self._tmux("send-keys", "-t", "main", *keys)
        assert proc.returncode == 0, proc.stderr

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear on screen within {timeout}s; screen:\n{screen}")

    def kill(self) -> None:
        self._tmux("kill-server")


def test_adaptr_tui_in_a_terminal(lineage_registry):
    exe = Path(sys.executable).parent / "adaptr"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "adaptr"]
    env = {"ADAPTR_REGISTRY": str(lineage_registry.root),
           "PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    session = TmuxSession([*command, "tui"], env)
    try:
        session.wait_for("5 versions")
        screen = session.wait_for("descendants")  # the lineage pane is drawn last
        assert "dpo-v2" in screen and "sft-v1" in screen and "Lineage" in screen
        time.sleep(0.5)

        session.send("/")
        time.sleep(0.5)  # keys read in one chunk with "/" would reach the table, not the filter
        session.send("-l", "stack")
        session.send("Enter")
        screen = session.wait_for("1 match")
        assert "stack-v1" in screen and "dpo-v2" not in screen.split("Overview")[0]

        session.send("2")
        screen = session.wait_for("example/tiny-llama")
        assert "tiny-sft" in screen and "derived" in screen

        session.send("3")
        screen = session.wait_for("Log of 20260115-094500-e5f6")
        assert "cancelled" in screen and "failed" in screen

        session.send("q")
        deadline = time.monotonic() + 15
        while session.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session.alive(), "adaptr tui did not exit on q"
    finally:
        session.kill()
