"""Docs generated from code must match it: hooks, CLI reference, registry schema."""

import inspect
import re
import subprocess
import sys

from conftest import REPO

from adaptr import hookspecs
from adaptr.schema import SCHEMA_FILE, current_schema

HOOK_HEADING = re.compile(r"^### `(?P<name>\w+)\((?P<args>[^)]*)\)`\s*$", re.M)


def _hookspecs() -> dict[str, list[str]]:
    return {name: list(inspect.signature(fn).parameters)
            for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "adaptr_spec")}


def test_every_hook_has_a_docs_entry():
    text = (REPO / "docs" / "hooks.md").read_text()
    documented = {m["name"]: [a.strip() for a in m["args"].split(",") if a.strip()]
                  for m in HOOK_HEADING.finditer(text)}
    specs = _hookspecs()
    assert len(specs) >= 7
    missing = sorted(set(specs) - set(documented))
    assert not missing, f"hooks without an entry in docs/hooks.md: {missing}"
    stale = sorted(set(documented) - set(specs))
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"
    for name, args in specs.items():
        assert documented[name] == args, f"docs/hooks.md: {name}({', '.join(args)}) expected"


def test_schema_sql_matches_the_migrations():
    assert SCHEMA_FILE.read_text() == current_schema(), (
        "registry/schema.sql is stale: run `python -m adaptr.schema`")


def test_cli_reference_matches_the_commands():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_cli_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin", "COLUMNS": "33"})
    assert proc.returncode == 0, proc.stderr


def test_cli_reference_is_deterministic(tmp_path):
    outputs = []
    for columns in ("40", "250"):
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); import gen_cli_docs; "
             "sys.stdout.write(gen_cli_docs.render())"],
            capture_output=True, text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin", "COLUMNS": columns})
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert "## `adaptr lineage`" in outputs[0]
