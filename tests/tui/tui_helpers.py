"""Helpers for driving the app in tests: settle workers, record notifications, read widgets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Note:
    message: str
    title: str
    severity: str


def record_notifications(app) -> list[Note]:
    """Wrap ``app.notify`` so a test can see every notification the app showed."""
    notes: list[Note] = []
    original = app.notify

    def notify(message, *, title="", severity="information", **kwargs):
        notes.append(Note(str(message), str(title), severity))
        return original(message, title=title, severity=severity, **kwargs)

    app.notify = notify
    return notes


async def settle(pilot, rounds: int = 2) -> None:
    """Let timers fire, workers finish and their messages land."""
    for _ in range(rounds):
        await pilot.pause(0.15)  # longer than the detail pane's debounce
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def wait_until(pilot, predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` while the app runs; True once it holds, False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(interval)
    return bool(predicate())


def run(coro):
    """pytest-asyncio is not a dependency: each pilot test runs its coroutine here."""
    return asyncio.run(coro)
