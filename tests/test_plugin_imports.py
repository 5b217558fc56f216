"""The import rule: plugins (the built-in ones and the documented examples) import only adaptr's
public modules, as an outside plugin would (the list is adaptr/__init__.py's docstring)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import adaptr

REPO = Path(__file__).resolve().parents[1]
FOLDERS = [REPO / "plugins", REPO / "docs" / "example-plugin", REPO / "docs" / "example-eval-plugin"]
FILES = sorted(p for folder in FOLDERS for p in folder.rglob("*.py"))


def public_modules() -> set[str]:
    """``adaptr`` and the ``adaptr.x`` modules adaptr's docstring names as public."""
    named = set(re.findall(r"``(adaptr(?:\.\w+)?)``", adaptr.__doc__))
    return {"adaptr"} | named


def adaptr_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an adaptr module in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "adaptr":  # `from adaptr import hf` reaches a private module too
                found += [(node.lineno, f"adaptr.{alias.name}") for alias in node.names
                          if f"adaptr.{alias.name}" in _submodules()]
    return [(line, name) for line, name in found if name == "adaptr" or name.startswith("adaptr.")]


def _submodules() -> set[str]:
    package = Path(adaptr.__file__).parent
    return {f"adaptr.{p.stem}" for p in package.glob("*.py")} | {f"adaptr.{p.name}" for p in package.iterdir()
                                                                  if (p / "__init__.py").exists()}


def test_the_public_modules_are_the_documented_ones():
    assert public_modules() == {"adaptr", "adaptr.trl_stage", "adaptr.merging", "adaptr.records", "adaptr.config",
                                "adaptr.store", "adaptr.peftdir", "adaptr.serving", "adaptr.jobs", "adaptr.plugins", "adaptr.cli"}
    assert len(FILES) > 10 and any("adaptr_grpo" in str(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_import_only_the_public_api(path):
    allowed = public_modules()
    wrong = [f"line {line}: {name}" for line, name in adaptr_imports(path) if name not in allowed]
    assert not wrong, f"{path.relative_to(REPO)} imports private adaptr modules: {', '.join(wrong)}"


def test_the_rule_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from adaptr import hookimpl, hf\n\ndef f():\n    from adaptr.hf.loading import load_tokenizer\n")
    assert [name for _, name in adaptr_imports(bad)] == ["adaptr", "adaptr.hf", "adaptr.hf.loading"]
