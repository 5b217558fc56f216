"""The CLI starts light: no torch, transformers, peft, trl, textual or huggingface_hub."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "textual",
         "huggingface_hub", "numpy")

# Runs a command in-process, then reports which heavy modules got imported along the way.
PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: sys.__stderr__.write("\\nLOADED " + json.dumps(
    [m for m in HEAVY if m in sys.modules]) + "\\n"))
from adaptr.cli import main
main({argv!r})
"""


def _loaded(argv, env=None, cwd=None):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, argv=argv)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env)
    line = [l for l in proc.stderr.splitlines() if l.startswith("LOADED ")][-1]
    return proc, json.loads(line[len("LOADED "):])


def test_import_adaptr_cli_is_light():
    code = ("import sys, adaptr, adaptr.cli; adaptr.cli.build_cli(); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


NO_METRIC = "no evaluation has recorded a metric 'loss'"


@pytest.mark.parametrize(("argv", "code", "words"), [
    (["--help"], 0, "Usage"), (["ls"], 0, ""), (["ls", "--json"], 0, "[]"), (["base", "ls"], 0, "tiny"),
    (["plugins"], 0, "sft"), (["doctor"], 0, ""), (["lineage", "tiny"], 0, "tiny"), (["show", "tiny"], 0, "tiny"),
    (["gc", "--dry-run"], 0, ""),
    # with no evaluation recorded yet, sorting by a metric is a usage error, and still light
    (["ls", "--sort", "loss"], 2, NO_METRIC), (["lineage", "tiny", "--metric", "loss"], 2, NO_METRIC)])
def test_commands_stay_light(argv, code, words, registry):
    registry.add_base("tiny", source="test", source_kind="local")
    env = {**os.environ, "ADAPTR_REGISTRY": str(registry.root)}
    proc, loaded = _loaded(argv, env=env)
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    assert words in (proc.stdout if code == 0 else proc.stderr)
    assert loaded == [], f"adaptr {' '.join(argv)} imported {loaded}"
