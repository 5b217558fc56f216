"""Run the real `adaptr` CLI many times fast: one warmed-up process forks a child per command.

``adaptr train`` imports torch, transformers, TRL and PEFT before its checks run (seconds); a
property test that tries hundreds of command lines cannot start a fresh interpreter for each.
The server here imports them once; each command then runs in a forked child exactly as the
console script runs it (``adaptr.cli.main(argv)``: same parsing, same error translation, its own
process, file descriptors 1 and 2 captured, the real exit status, tracebacks included). A
test in test_cli_properties.py checks that it answers as the console script does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SERVER = r"""
import json, os, sys, traceback
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch, transformers, peft, trl  # the imports every child would otherwise pay for
torch.set_num_threads(1)
from adaptr import cli
requests, replies = sys.stdin, sys.stdout
for line in requests:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1); os.dup2(err, 2)
        sys.stdout = os.fdopen(1, "w", closefd=False); sys.stderr = os.fdopen(2, "w", closefd=False)
        os.environ.update(job["env"]); os.chdir(job["cwd"])
        code = 1
        try:
            cli.main(job["argv"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    replies.flush()
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class CliForkServer:
    """``server.run(*argv, registry=..., env=..., cwd=...)`` -> Result, like conftest.run_cli."""

    def __init__(self):
        self._dir = Path(tempfile.mkdtemp(prefix="adaptr-forkserver-"))
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=self._dir)

    def run(self, *argv: str, registry=None, env: dict | None = None, cwd=None) -> Result:
        env = dict(env or {})
        if registry is not None:
            env["ADAPTR_REGISTRY"] = str(registry)
        out, err = self._dir / "stdout", self._dir / "stderr"
        job = {"argv": list(argv), "env": env, "cwd": str(cwd or self._dir),
               "stdout": str(out), "stderr": str(err)}
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline()
        if not reply:
            raise RuntimeError("the CLI fork server died")
        code = json.loads(reply)["code"]
        return Result(code, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        for path in self._dir.iterdir():
            path.unlink()
        os.rmdir(self._dir)
