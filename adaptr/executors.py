"""Built-in executors: how a detached run's process is started.

``local`` runs the stage in one process. ``accelerate`` runs it in ``processes`` processes through
``accelerate launch`` (DDP; an accelerate ``config_file`` passes FSDP or DeepSpeed settings
through). Without CUDA the processes train on the CPU and talk over gloo.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from .errors import MachineError, UsageError
from .hookspecs import hookimpl
from .stages import Executor

_ACCELERATE_OPTIONS = ("processes", "config_file", "cpu", "main_process_port")


def _worker_args(run: dict) -> list[str]:
    return ["-m", "adaptr", "_worker", run["id"]]


def _local_argv(run: dict, options: dict) -> list[str]:
    return [sys.executable, *_worker_args(run)]


def _local_check(options: dict) -> None:
    unknown = sorted(set(options) - {"processes"})
    if unknown:
        raise UsageError(f"the local executor takes no option(s) {', '.join(unknown)}",
                         "those are for --executor slurm")
    if int(options.get("processes") or 1) != 1:
        raise UsageError("the local executor runs one process",
                         "pass --executor accelerate for --processes N")


def _accelerate_check(options: dict) -> None:
    unknown = sorted(set(options) - set(_ACCELERATE_OPTIONS))
    if unknown:
        raise UsageError(f"unknown accelerate executor option(s): {', '.join(unknown)}",
                         f"known: {', '.join(_ACCELERATE_OPTIONS)}")
    processes = options.get("processes")
    processes = 1 if processes is None else processes
    if not str(processes).isdigit() or int(processes) < 1:
        raise UsageError(f"--processes {processes!r} is not a positive number", "write e.g. --processes 2")
    config_file = options.get("config_file")
    if config_file and not Path(config_file).is_file():
        raise UsageError(f"accelerate config file {config_file} not found",
                         "write one with `accelerate config --config_file PATH`")
    if shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None:
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise MachineError("the accelerate executor needs the accelerate package",
                               "pip install accelerate")


def _accelerate_argv(run: dict, options: dict) -> list[str]:
    processes = int(options.get("processes") or 1)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--main_process_port", str(options.get("main_process_port") or _free_port())]
    if options.get("config_file"):
        argv += ["--config_file", str(Path(options["config_file"]).resolve())]
    elif processes > 1:
        argv += ["--multi_gpu"]  # torchrun under the hood; on CPU the env below selects gloo
    if options.get("cpu"):
        # `--cpu` would pick accelerate's single-process launcher; ACCELERATE_USE_CPU keeps the
        # multi-process launcher and makes every process a CPU (gloo) rank. Without CUDA the
        # worker sets it itself (jobs.work).
        argv = ["env", "ACCELERATE_USE_CPU=true", *argv]
    return [*argv, "--module", *_worker_args(run)[1:]]


def _free_port() -> int:
    """A port for the ranks' rendezvous, so two runs on one machine do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@hookimpl
def register_executors(register):
    register(Executor("local", _local_argv, check=_local_check, help="one process on this machine"))
    register(Executor("accelerate", _accelerate_argv, check=_accelerate_check,
                      help="several processes through `accelerate launch` (DDP; FSDP/DeepSpeed "
                           "through an accelerate config file)"))
