"""The layers of docs/architecture.md, checked on the code's own imports (parsed, not run).

- only ``adaptr/hf/`` imports the training libraries at module level (torch and friends load
  when a stage runs, never for ``adaptr ls`` or the TUI);
- the core (everything under ``adaptr/`` but the front ends) never imports the CLI or the TUI;
- the TUI does not import the CLI's modules at module level (it may parse options with a
  command's own click parser inside a call, which loads no torch either);
(That plugins import only adaptr's public modules is tests/test_plugin_imports.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TRAINING_LIBRARIES = {"torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes"}
FRONT_ENDS = ("adaptr/cli/", "adaptr/tui/", "adaptr/__main__.py")


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for each import in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).parent.parts) if path.is_relative_to(ROOT) else ""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_only_the_hf_layer_imports_training_libraries_at_module_level():
    offenders = [f"{_rel(p)}:{line} imports {module}" for p in _sources("adaptr")
                 if not _rel(p).startswith("adaptr/hf/")
                 for line, module in _imports(p, top_level_only=True)
                 if module.split(".")[0] in TRAINING_LIBRARIES]
    assert offenders == []


def test_the_core_never_imports_a_front_end():
    offenders = [f"{_rel(p)}:{line} imports {module}" for p in _sources("adaptr")
                 if not _rel(p).startswith(FRONT_ENDS)
                 for line, module in _imports(p, top_level_only=False)
                 if module.startswith(("adaptr.cli", "adaptr.tui"))]
    assert offenders == []


def test_the_tui_does_not_import_the_cli_at_module_level():
    offenders = [f"{_rel(p)}:{line} imports {module}" for p in _sources("adaptr/tui")
                 for line, module in _imports(p, top_level_only=True) if module.startswith("adaptr.cli")]
    assert offenders == []


def test_no_run_status_literal_in_sql_outside_the_registry():
    """Run statuses are adaptr.entities.RunStatus; SQL naming one lives in registry.py (and the
    migrations that created the column)."""
    import re

    from adaptr.entities import RunStatus

    literal = re.compile(r"'(%s)'" % "|".join(s.value for s in RunStatus))
    offenders = []
    for path in _sources("adaptr", "plugins"):
        if _rel(path) in ("adaptr/registry.py", "adaptr/migrations.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.search(r"\b(SELECT|UPDATE|INSERT|DELETE)\b", node.value) and literal.search(node.value)):
                offenders.append(f"{_rel(path)}:{node.lineno}")
    assert offenders == []
