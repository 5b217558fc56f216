"""Helpers shared by the jobs tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def numbers_file(directory: Path, values=(0.5, 1.0, -0.25, 2.0, 0.75)) -> Path:
    path = Path(directory) / "numbers.txt"
    path.write_text("".join(f"{x}\n" for x in values))
    return path


def loop_request(data: Path, **config):
    from adaptr import StageRequest

    return StageRequest(stage="testloop", base="toy", data=str(data), config=config)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def losses(registry, run_id: str) -> dict[int, float]:
    return {row["step"]: row["value"] for row in registry.metrics(run_id, "loss")}


def killed_after_checkpoint(registry, request, step, monkeypatch):
    """A detached run held right after recording its checkpoint at ``step``, then SIGKILLed."""
    from adaptr import jobs

    monkeypatch.setenv("ADAPTR_TEST_HANG_AT", f"checkpoint-recorded-{step}")
    run = jobs.submit(registry, request)
    monkeypatch.delenv("ADAPTR_TEST_HANG_AT")
    wait_until(lambda: any(c["step"] == step for c in registry.checkpoints(run["id"])),
               what=f"checkpoint {step}")
    os.killpg(run["pid"], signal.SIGKILL)
    wait_until(lambda: registry.run(run["id"])["status"] == "interrupted" or jobs.refresh(registry),
               what="interrupted")
    assert registry.run(run["id"])["status"] == "interrupted"
    return registry.run(run["id"])
