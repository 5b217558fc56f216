"""Property-based tests of the CLI (hypothesis): generated refs, names, option values, YAML recipes,
data rows and adapter configs, each run through the real command on a fresh copy of a real
registry.

Invariants: the exit code is 0 or 2; on 2, stderr is one line, `error: ... (hint: ...)`, with no
traceback, and the registry's rows and files are byte for byte what they were. `adaptr train`
runs with --dry-run (every check, no training), so it must leave the registry unchanged on 0 too.

The commands run in a fork server (tests/cli_forkserver.py) so that hundreds of examples fit in
CI; the first test checks that it answers exactly as the console script does.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

from .test_verify_before_use import snapshot

SETTINGS = settings(max_examples=int(__import__("os").environ.get("ADAPTR_HYPOTHESIS_EXAMPLES", "60")),
                    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
EXAMPLES_RUN: dict[str, int] = {}


@pytest.fixture(scope="module")
def cli():
    from cli_forkserver import CliForkServer

    server = CliForkServer()
    yield server
    server.close()
    print(f"hypothesis examples run: {EXAMPLES_RUN} (total {sum(EXAMPLES_RUN.values())})")


class Sandbox:
    """A fresh copy of the template registry per example, and a scratch directory for files."""

    def __init__(self, template: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="adaptr-prop-"))
        self.registry = shutil.copytree(template, self.dir / "registry")
        self.files = self.dir / "files"
        self.files.mkdir()

    def write(self, name: str, content: bytes) -> str:
        path = self.files / name
        path.write_bytes(content)
        return str(path)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def check_invariants(cli, sandbox: Sandbox, argv: list[str], *, must_not_write: bool = False) -> None:
    before = snapshot(sandbox.registry)
    result = cli.run(*argv, registry=sandbox.registry, cwd=sandbox.files)
    shown = f"adaptr {' '.join(map(repr, argv))}\nexit {result.returncode}\n{result.stderr[-3000:]}"
    assert result.returncode in (0, 2), shown
    assert "Traceback" not in result.stderr, shown
    if result.returncode == 2:
        lines = result.stderr.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], shown
    if result.returncode == 2 or must_not_write:
        assert snapshot(sandbox.registry) == before, shown
    if __import__("os").environ.get("ADAPTR_HYPOTHESIS_DEBUG") and result.returncode == 2:
        print("REFUSED", argv[0], result.stderr[:90].replace("\n", " "))
    key = f"{argv[0]} exit {result.returncode}"
    EXAMPLES_RUN[key] = EXAMPLES_RUN.get(key, 0) + 1


def test_the_fork_server_answers_as_the_console_script_does(cli, reg_dir):
    for argv in (["ls", "--json"], ["show", "nope"], ["train", "sft", "--base", "tiny", "--data", "/no/file"],
                 ["tag"], ["train", "sft", "--lerning-rate", "1"]):
        forked, real = cli.run(*argv, registry=reg_dir), run_cli(*argv, registry=reg_dir)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)


# -- strategies ----------------------------------------------------------------------------

WEIRD = string.ascii_letters + string.digits + "-_.@/ \n\t:é☃\x00"
KNOWN_REFS = ["sft-v1", "st-v1", "imp-v1", "sft", "st", "sft@prod", "sft-v0", "sft-v99", "tiny"]
refs = st.one_of(st.sampled_from(KNOWN_REFS), st.sampled_from(KNOWN_REFS), st.text(WEIRD, max_size=24))
names = st.one_of(st.sampled_from(["new", "x-v2", "a b", "..", "", "-x", "ok.name", "n" * 97]),
                  st.text(WEIRD, max_size=30))
# Plausible values as often as hostile ones, so examples also get past the first check.
plausible = st.sampled_from(["1", "2", "4", "8", "16", "0.1", "0.5", "1e-4", "42", "-1"])
numbers = st.one_of(plausible, plausible, st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**20, 10**20), st.sampled_from(["0", "nan", "inf", "1,2", "", "true"]),
                    st.text(WEIRD, max_size=6))
TRAIN_OPTIONS = {
    "--learning-rate": numbers, "--r": numbers, "--lora-alpha": numbers, "--lora-dropout": numbers,
    "--max-steps": numbers, "--per-device-train-batch-size": numbers, "--seed": numbers,
    "--max-length": numbers, "--eval-fraction": numbers, "--save-steps": numbers,
    "--warmup-steps": numbers, "--logging-steps": numbers,
    "--lr-scheduler-type": st.one_of(st.sampled_from(["linear", "cosine", "bogus"]), st.text(WEIRD, max_size=8)),
    "--optim": st.one_of(st.sampled_from(["adamw_torch", "sgd", "bogus"]), st.text(WEIRD, max_size=8)),
    "--target-modules": st.one_of(st.sampled_from(["q_proj,v_proj", "all-linear", "nosuch", "[1]"]),
                                  st.text(WEIRD, max_size=12)),
    "--bias": st.one_of(st.sampled_from(["none", "all", "lora_only"]), st.text(WEIRD, max_size=6)),
    "--mode": st.sampled_from(["continue", "merge", "stack"]),
    "--name": names,
}
CONFIG_KEYS = ["r", "lora_alpha", "learning_rate", "max_steps", "target_modules", "bias", "seed",
               "max_length", "beta", "from", "base", "data", "mode", "name", "eval_fraction", "bogus"]
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
              st.text(WEIRD, max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "robot", ""]),
                                           "content": st.one_of(st.text(max_size=20), st.integers())}), max_size=3)
row_values = st.one_of(st.text(max_size=30), st.integers(), st.none(), messages)
rows = st.lists(st.dictionaries(st.sampled_from(["messages", "prompt", "completion", "text", "chosen",
                                                 "rejected", "label", "x"]), row_values, max_size=4), max_size=5)


@st.composite
def data_file_content(draw) -> bytes:
    kind = draw(st.sampled_from(["rows", "garbage", "shipped-sft", "shipped-sft", "shipped-prefs",
                                 "shipped-prefs"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind.startswith("shipped"):
        return data_file(SFT_DATA if kind == "shipped-sft" else PREFERENCE_DATA).read_bytes()
    return "".join(json.dumps(row) + "\n" for row in draw(rows)).encode()


@st.composite
def recipe(draw) -> bytes | None:
    kind = draw(st.sampled_from(["none", "none", "mapping", "mapping", "garbage"]))
    if kind == "none":
        return None
    if kind == "garbage":
        return draw(st.binary(max_size=80))
    return yaml.safe_dump(draw(st.dictionaries(st.sampled_from(CONFIG_KEYS), yaml_values, max_size=4))).encode()


# -- the properties ------------------------------------------------------------------------


@SETTINGS
@given(stage=st.sampled_from(["sft", "dpo"]), source=st.one_of(st.just(None), refs),
       options=st.dictionaries(st.sampled_from(sorted(TRAIN_OPTIONS)), st.just(None), max_size=3),
       values=st.data(), data=data_file_content(), config=recipe())
def test_train_either_plans_or_refuses_in_one_line(cli, integrity_template, stage, source, options, values,
                                                   data, config):
    sandbox = Sandbox(integrity_template)
    try:
        argv = ["train", stage, *(["--base", "tiny"] if source is None else ["--from", source]),
                "--data", sandbox.write("data.jsonl", data)]
        if config is not None:
            argv += ["--config", sandbox.write("recipe.yaml", config)]
        for option in options:
            argv += [option, str(values.draw(TRAIN_OPTIONS[option], label=option))]
        check_invariants(cli, sandbox, argv + ["--dry-run"], must_not_write=True)
    finally:
        sandbox.close()


PLAUSIBLE_OPTIONS = {
    "--learning-rate": st.sampled_from(["1e-4", "0.002", "5e-5"]), "--r": st.sampled_from(["1", "4", "8"]),
    "--lora-alpha": st.sampled_from(["1", "8", "32"]), "--lora-dropout": st.sampled_from(["0", "0.1"]),
    "--max-steps": st.sampled_from(["1", "5", "-1"]), "--per-device-train-batch-size": st.sampled_from(["1", "3"]),
    "--seed": st.sampled_from(["0", "7"]), "--max-length": st.sampled_from(["8", "64"]),
    "--eval-fraction": st.sampled_from(["0.25", "0.5"]), "--warmup-steps": st.sampled_from(["0", "0.1", "2"]),
    "--lr-scheduler-type": st.sampled_from(["linear", "cosine", "constant"]),
    "--optim": st.sampled_from(["adamw_torch", "sgd"]), "--bias": st.sampled_from(["none", "all", "lora_only"]),
    "--target-modules": st.sampled_from(["q_proj,v_proj", "all-linear", "down_proj"]),
    "--mode": st.sampled_from(["continue", "merge", "stack"]),
}


@SETTINGS
@given(stage=st.sampled_from(["sft", "dpo"]), source=st.sampled_from([None, "sft-v1", "st-v1", "imp-v1"]),
       options=st.dictionaries(st.sampled_from(sorted(PLAUSIBLE_OPTIONS)), st.just(None), max_size=4),
       values=st.data())
def test_plausible_training_plans_write_nothing(cli, integrity_template, stage, source, options, values):
    """Mostly valid requests: they get past the first checks into the deeper ones."""
    sandbox = Sandbox(integrity_template)
    try:
        data = data_file(SFT_DATA if stage == "sft" else PREFERENCE_DATA)
        argv = ["train", stage, *(["--base", "tiny"] if source is None else ["--from", source]), "--data", str(data)]
        for option in options:
            if option != "--mode" or source is not None:
                argv += [option, values.draw(PLAUSIBLE_OPTIONS[option], label=option)]
        check_invariants(cli, sandbox, argv + ["--dry-run"], must_not_write=True)
    finally:
        sandbox.close()


@st.composite
def registry_command(draw) -> list[str]:
    kind = draw(st.sampled_from(["show", "lineage", "tag", "untag", "rm", "ls", "export", "merge", "into-base"]))
    if kind in ("show", "lineage"):
        return [kind, draw(refs)] + (["--json"] if draw(st.booleans()) else [])
    if kind in ("tag", "untag"):
        return [kind, draw(refs), draw(names)]
    if kind == "rm":
        return ["rm", draw(refs)] + (["--force"] if draw(st.booleans()) else [])
    if kind == "ls":
        return ["ls", "--base", draw(names)] if draw(st.booleans()) else ["ls", "--stage", draw(names)]
    if kind == "export":
        return ["export", draw(refs), "{out}"] + (["--merged"] if draw(st.booleans()) else [])
    if kind == "into-base":
        return ["merge", draw(refs), "--into-base", "--name", draw(names),
                "--dtype", draw(st.sampled_from(["bf16", "fp32", "int8", "x"]))]
    weights = ",".join(str(draw(numbers)) for _ in range(draw(st.integers(1, 3))))
    return ["merge", draw(refs), draw(refs), "--method", draw(st.sampled_from(["linear", "cat", "ties", "x"])),
            "--weights", weights, "--density", str(draw(numbers)), "--name", draw(names)]


@SETTINGS
@given(argv=registry_command(), out=st.sampled_from(["new", "existing-file", "non-empty-dir"]))
def test_registry_commands_succeed_or_refuse_in_one_line(cli, integrity_template, argv, out):
    sandbox = Sandbox(integrity_template)
    try:
        target = sandbox.files / "out"
        if out == "existing-file":
            target.write_text("x")
        elif out == "non-empty-dir":
            target.mkdir()
            (target / "keep").write_text("x")
        check_invariants(cli, sandbox, [a.replace("{out}", str(target)) for a in argv])
    finally:
        sandbox.close()


CONFIG_MUTATIONS = st.dictionaries(
    st.sampled_from(["r", "lora_alpha", "target_modules", "peft_type", "rank_pattern", "alpha_pattern",
                     "use_dora", "fan_in_fan_out", "bias", "modules_to_save", "base_model_name_or_path"]),
    yaml_values, max_size=3)


@SETTINGS
@given(changes=CONFIG_MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 4000)), name=st.one_of(st.none(), names))
def test_import_of_a_mangled_adapter_succeeds_or_refuses_in_one_line(cli, integrity_template, changes, cut, name):
    sandbox = Sandbox(integrity_template)
    try:
        adapter = shutil.copytree(sandbox.registry / "adapters" / "imp" / "v1", sandbox.files / "adapter")
        (adapter / "adaptr-manifest.json").unlink()
        config_file = adapter / "adapter_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **changes}))
        weights = adapter / "adapter_model.safetensors"
        if cut is not None:
            weights.write_bytes(weights.read_bytes()[:cut])
        argv = ["import", str(adapter), "--base", "tiny"] + (["--name", name] if name is not None else [])
        check_invariants(cli, sandbox, argv)
    finally:
        sandbox.close()
