"""Built-in executors: how a detached run's process is started."""

from __future__ import annotations

import sys

from .hookspecs import hookimpl
from .stages import Executor


def _local_argv(run: dict, options: dict) -> list[str]:
    return [sys.executable, "-m", "adaptr", "_worker", run["id"]]


@hookimpl
def register_executors(register):
    register(Executor("local", _local_argv, help="one process on this machine"))
