"""Refused cells through the real `adaptr` console script: exit 2, one line with a hint, and the
registry byte for byte as it was. One cell for each place that refuses (the in-process matrix
checks every refused cell the same way, short of the process boundary)."""

from __future__ import annotations

import pytest
import yaml

from conftest import dump_registry, run_cli

from .matrix import Cell

CASES = [
    # (cell, what the command line is)
    (Cell("llama", "init-pissa", "sft"), "train"),           # preflight: settings
    (Cell("qwen2", "mts-lm_head", "stack"), "train"),        # preflight: stacking
    (Cell("gpt2", "lm_head-target", "continue"), "train"),   # preflight: the meta-device adapter
    (Cell("qwen2", "init-olora", "import"), "import"),       # import checks
    (Cell("gpt2", "dora", "weighted-cat"), "merge"),         # weighted-merge checks
]


def _argv(group, cell: Cell, kind: str, tmp_path) -> list[str]:
    if kind == "import":
        return ["import", str(group.peft_dir()), "--base", "base", "--name", "import"]
    if kind == "merge":
        return ["merge", group.artifact("P")["ref"], group.artifact("C")["ref"], "--method", "cat",
                "--name", "w"]
    request = group.request(cell.op)
    recipe = {**request.config, **({"base": request.base} if request.base else
                                   {"from": request.parent, "mode": request.mode})}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    stage = "dpo" if cell.op in ("dpo", "dpo-continue", "merge-mode") else "sft"
    return ["train", stage, "--data", request.data, "--config", str(tmp_path / "recipe.yaml")]


@pytest.mark.parametrize("cell,kind", CASES, ids=[str(c) for c, _ in CASES])
def test_refused_cell_exits_2_on_one_line_and_writes_nothing(cell, kind, groups, tmp_path):
    assert cell.expected.kind == "refused"
    group = groups(cell.family, cell.config)
    argv = _argv(group, cell, kind, tmp_path)  # makes the artifacts the command names
    before = dump_registry(group.registry.root)
    proc = run_cli(*argv, registry=group.registry)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert cell.expected.reason in proc.stderr and "(hint: " in proc.stderr
    assert dump_registry(group.registry.root) == before

