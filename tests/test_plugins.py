"""Plugin loading through real entry points: order, restriction, duplicates, broken plugins."""

import json
import os
import textwrap

import pytest
from conftest import run_cli

STAGE_PLUGIN = textwrap.dedent("""
    from dataclasses import dataclass
    from adaptr import Stage, hookimpl

    @dataclass
    class Config:
        pass

    @hookimpl
    def register_stages(register):
        register(Stage({stage!r}, Config, run=lambda ctx: None, help="test stage"))
""")


def _site(tmp_path, plugins: dict[str, str | None]) -> dict:
    """A directory on PYTHONPATH with one distribution per plugin, each declaring an entry point.

    ``plugins`` maps an entry-point name to the stage its module registers, or None for a module
    that does not exist (a broken install).
    """
    site = tmp_path / "site"
    site.mkdir()
    for name, stage in plugins.items():
        dist = site / f"adaptr_test_{name}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: adaptr-test-{name}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[adaptr]\n{name} = adaptr_test_{name}\n")
        if stage is not None:
            (site / f"adaptr_test_{name}.py").write_text(STAGE_PLUGIN.format(stage=stage))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_builtins_and_outside_plugins(tmp_path):
    env = _site(tmp_path, {"orpo": "orpo"})
    listed = json.loads(run_cli("plugins", "--json", env=env, check=True).stdout)
    by_name = {p["name"]: p for p in listed}
    assert by_name["orpo"]["stages"] == ["orpo"] and by_name["orpo"]["module"] == "adaptr_test_orpo"
    assert by_name["sft"]["stages"] == ["sft"] and by_name["adaptr.executors"]["executors"]
    assert by_name["grpo"]["stages"] == ["grpo"] and by_name["kto"]["stages"] == ["kto"]
    assert by_name["grpo"]["module"] == "adaptr_grpo" and by_name["kto"]["module"] == "adaptr_kto"
    assert by_name["eval"]["evaluators"] == ["generate", "loss", "preference"]
    assert by_name["adaptr.evals"]["stages"] == ["eval"]
    restricted = run_cli("plugins", "--json", env={**env, "ADAPTR_LOAD_PLUGINS": "orpo"}, check=True)
    assert {p["name"] for p in json.loads(restricted.stdout)} == {"adaptr.executors", "adaptr.evals", "orpo"}


def test_two_plugins_claiming_one_stage(tmp_path):
    env = _site(tmp_path, {"other": "sft"})
    proc = run_cli("plugins", env=env)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "'sft'" in line and "sft and other" in line and "hint" in line


@pytest.mark.parametrize("argv", [["plugins", "--json"], ["--help"]])
def test_a_broken_plugin_is_skipped_with_a_warning(tmp_path, argv):
    env = _site(tmp_path, {"broken": None})
    proc = run_cli(*argv, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken'" in proc.stderr and "skipped" in proc.stderr
    if argv[0] == "plugins":
        broken = [p for p in json.loads(proc.stdout) if p["name"] == "broken"]
        assert broken and "ModuleNotFoundError" in broken[0]["error"]
