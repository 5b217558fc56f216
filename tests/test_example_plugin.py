"""The example plugin in docs/example-plugin: built from its own pyproject, installed with its
entry point, discovered by adaptr like any outside plugin, and run as `adaptr train loop`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, dump_registry, run_cli

PLUGIN_SRC = REPO / "docs" / "example-plugin"
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _offline_build_args() -> list[str]:
    """Build with this environment's setuptools (torch depends on it) when it can make wheels by
    itself (70.1+), so no package index is needed; else let pip fetch a build backend."""
    try:
        major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation", "--no-index"] if (major, minor) >= (70, 1) else []


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict:
    """Install adaptr-loop with pip into a directory the subprocesses put first on their path.

    A real install (wheel built from the plugin's pyproject, dist-info with its entry point), but
    into a private target, so the shared environment stays clean and parallel workers do not race.
    The source is copied first because pip builds in the source tree.
    """
    work = tmp_path_factory.mktemp("example-plugin")
    src = work / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *_offline_build_args(),
         "--target", str(site), str(src)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (next(site.glob("adaptr_loop-*.dist-info")) / "entry_points.txt").read_text().split() == [
        "[adaptr]", "loop", "=", "adaptr_loop"]
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def sft_v1(registry_with_base, tiny_base_dir) -> dict:
    """`sft-v1`: a LoRA adapter on the tiny base made directly with PEFT (random B, so it is not
    the identity), published with its LoRA settings in its config as the sft stage records them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = get_peft_model(base, LoraConfig(**LORA, init_lora_weights=False, task_type="CAUSAL_LM"))
    with registry_with_base.store.staging("adapter") as staged:
        model.save_pretrained(staged)
        return registry_with_base.publish_adapter(staged, name="sft", base="tiny", stage="sft", config=LORA)


@pytest.fixture
def text_data(tmp_path) -> Path:
    path = tmp_path / "notes.jsonl"
    rows = [{"text": f"Question: what is {i} + {i}? Answer: {2 * i}."} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def adaptr(registry, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The real `adaptr` console script, with the plugin installed."""
    return run_cli(*args, registry=registry, env=env)


def _sets(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]


def _tensors(directory: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "adapter_model.safetensors"))


def _logits(tiny_base_dir, adapter_dir: str | None):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model(torch.arange(1, 17).unsqueeze(0)).logits


@pytest.mark.slow
def test_loop_continues_a_parent_and_records_everything(registry_with_base, sft_v1, text_data, plugin_env,
                                                        tiny_base_dir):
    import torch

    from adaptr import store

    registry = registry_with_base
    proc = adaptr(registry, plugin_env, "train", "loop", "--from", "sft-v1", "--data", str(text_data),
                  "--save-steps", "3", "--learning-rate", "1e-2", *_sets({"max_steps": 6, "max_length": 32}))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loop-v1"
    version = registry.resolve("loop-v1")

    assert version["stage"] == "loop"
    assert [(p["ref"], p["relation"]) for p in version["parents"]] == [("sft-v1", "continued")]
    assert {k: version["config"][k] for k in LORA} == LORA  # inherited from the parent
    assert (version["config"]["save_steps"], version["config"]["max_steps"]) == (3, 6)
    parent_tensors, tensors = _tensors(sft_v1["path"]), _tensors(version["path"])
    assert {k: v.shape for k, v in tensors.items()} == {k: v.shape for k, v in parent_tensors.items()}
    assert all(not torch.equal(tensors[k], parent_tensors[k]) for k in tensors)
    assert not (Path(version["path"]) / "ref").exists()
    store.verify(Path(version["path"]), version["sha256"])

    base_logits = _logits(tiny_base_dir, None)
    parent_logits = _logits(tiny_base_dir, sft_v1["path"])
    child_logits = _logits(tiny_base_dir, version["path"])  # plain PeftModel.from_pretrained
    assert not torch.allclose(child_logits, parent_logits)
    assert not torch.allclose(child_logits, base_logits)

    record = version["record"]
    memory = record["memory"]
    assert memory["cpu_peak_rss_bytes"] > 0
    if memory["gpu_peak_allocated_bytes"] is not None:  # on CUDA: the allocator's peak vs what it reserved
        assert 0 < memory["gpu_peak_allocated_bytes"] <= memory["gpu_peak_reserved_bytes"]
    assert record["parent"] == "sft-v1" and record["data"]["rows"] == 16
    assert record["data"]["sha256"] == hashlib.sha256(text_data.read_bytes()).hexdigest()
    assert 0 < record["parameters"]["trainable"] < record["parameters"]["total"]
    assert record["checks"] == {"base_weights_unchanged": True, "adapter_tensors": len(tensors),
                                "changed_tensors": len(tensors)}
    assert record["speed"]["steps"] == 6 and record["speed"]["tokens"] > 0
    assert record["libraries"]["adaptr-loop"] == "0.1.0"

    run = registry.run(version["run_id"])
    assert run["status"] == "succeeded" and run["output_ref"] == "loop-v1"
    assert [m["step"] for m in registry.metrics(run["id"], "loss")] == [1, 2, 3, 4, 5, 6]
    checkpoints = registry.checkpoints(run["id"])
    assert [c["step"] for c in checkpoints] == [6, 3]
    for checkpoint in checkpoints:
        store.verify(Path(checkpoint["path"]), checkpoint["sha256"])
        names = {p.name for p in Path(checkpoint["path"]).iterdir()}
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names


@pytest.mark.slow
def test_loop_trains_a_fresh_adapter_on_a_base(registry_with_base, text_data, plugin_env):
    proc = adaptr(registry_with_base, plugin_env, "train", "loop", "--base", "tiny", "--data", str(text_data),
                  "--r", "2", "--target-modules", "q_proj,k_proj", *_sets({"max_steps": 2, "save_steps": 0}))
    assert proc.returncode == 0, proc.stderr
    version = registry_with_base.resolve("loop")
    assert version["parents"] == [] and version["base"] == "tiny"
    saved = json.loads((Path(version["path"]) / "adapter_config.json").read_text())
    assert (saved["r"], sorted(saved["target_modules"])) == (2, ["k_proj", "q_proj"])
    assert registry_with_base.checkpoints(version["run_id"]) == []


GOOD_ROW = '{"text": "fine"}'


@pytest.mark.slow
@pytest.mark.parametrize("rows, args, expected", [
    ([GOOD_ROW, GOOD_ROW, '{"text": oops}'], (), "row 3: not valid JSON"),
    ([GOOD_ROW, '{"prompt": "hi"}'], (), "row 2: key 'text' is missing (expected a non-empty string)"),
    (['{"text": 7}'], (), "row 1: key 'text' is int 7 (expected a non-empty string)"),
    ([GOOD_ROW], ("--set", "r=16"), "r=16 conflicts with sft-v1, which has r=4"),
    ([GOOD_ROW], ("--target-modules", "q_proj"), "conflicts with sft-v1, which has target_modules="),
    ([GOOD_ROW], ("--max-steps", "0"), "max_steps must be at least 1"),
    ([GOOD_ROW], ("--set", "learning_rat=1"), "unknown config key 'learning_rat'"),
    ([GOOD_ROW], ("--mode", "stack"), "stage loop only continues a parent, not --mode stack"),
    ([GOOD_ROW], ("--eval-fraction", "0.1"), "stage loop does not evaluate"),
])
def test_loop_refuses_bad_input_before_writing_anything(registry_with_base, sft_v1, plugin_env, tmp_path,
                                                         rows, args, expected):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(rows) + "\n")
    before = dump_registry(registry_with_base.root)
    proc = adaptr(registry_with_base, plugin_env, "train", "loop", "--from", "sft-v1", "--data", str(data), *args)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert dump_registry(registry_with_base.root) == before


@pytest.mark.slow
def test_loop_cancelled_then_resumed_matches_an_uninterrupted_run(registry_with_base, sft_v1, text_data,
                                                                  plugin_env):
    """SIGTERM (what `adaptr cancel` sends) makes the loop checkpoint and publish nothing;
    `adaptr resume` continues from that checkpoint to exactly the weights of a run never stopped."""
    import signal

    import torch

    registry = registry_with_base
    train = ("train", "loop", "--from", "sft-v1", "--data", str(text_data), "--max-steps", "40",
             "--learning-rate", "1e-2", "--save-steps", "0")
    proc = adaptr(registry, plugin_env, *train, "--name", "stopped", "--detach")
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    _wait_for(lambda: (registry.run(run_id)["progress_step"] or 0) >= 1, registry, run_id)
    os.kill(registry.run(run_id)["pid"], signal.SIGTERM)  # direct, so the run cannot finish first
    _wait_for(lambda: registry.run(run_id)["status"] != "running", registry, run_id, ended_ok=True)
    run = registry.run(run_id)
    assert run["status"] == "cancelled" and run["output_ref"] is None, run
    (checkpoint,) = registry.checkpoints(run_id)
    assert 1 <= checkpoint["step"] == run["progress_step"] < 40
    assert [v["ref"] for v in registry.adapters()] == ["sft-v1"]

    proc = adaptr(registry, plugin_env, "resume", run_id)
    assert proc.returncode == 0, proc.stderr
    resumed = registry.resolve("stopped-v1")
    assert resumed["record"]["resumed_from"]["step"] == checkpoint["step"]
    assert [(p["ref"], p["relation"]) for p in resumed["parents"]] == [("sft-v1", "continued")]
    proc = adaptr(registry, plugin_env, *train, "--name", "straight")
    assert proc.returncode == 0, proc.stderr
    straight = _tensors(registry.resolve("straight-v1")["path"])
    for key, tensor in _tensors(resumed["path"]).items():
        assert torch.equal(tensor, straight[key]), key


def _wait_for(condition, registry, run_id: str, *, ended_ok: bool = False, timeout: float = 180.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        run = registry.run(run_id)
        log = Path(run["run_dir"], "run.log")
        assert ended_ok or run["status"] in ("queued", "running"), log.read_text() if log.exists() else run
        assert time.monotonic() < deadline, f"timed out; run is {run['status']}"
        time.sleep(0.01)


def test_loop_is_listed_by_adaptr_plugins_with_options_from_its_config(plugin_env):
    proc = run_cli("plugins", "--json", env=plugin_env)
    assert proc.returncode == 0, proc.stderr
    (loop,) = [p for p in json.loads(proc.stdout) if p["name"] == "loop"]
    assert (loop["module"], loop["stages"], loop["hooks"]) == ("adaptr_loop", ["loop"], ["register_stages"])
    proc = run_cli("train", "loop", "--help", env=plugin_env)
    assert proc.returncode == 0, proc.stderr
    assert "plain PyTorch loop" in proc.stdout
    assert re.search(r"--max-grad-norm FLOAT\s+Clip gradients to this global norm", proc.stdout)


def test_writing_plugins_excerpts_match_the_code():
    """Every code block in docs/writing-plugins.md marked `<!-- excerpt: FILE -->` is verbatim
    from that file of the example plugin, so the walk-through cannot drift from the code."""
    text = (REPO / "docs" / "writing-plugins.md").read_text()
    excerpts = re.findall(r"<!-- excerpt: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    assert len(excerpts) >= 10
    for name, block in excerpts:
        assert block in (PLUGIN_SRC / name).read_text(), f"docs/writing-plugins.md: excerpt of {name} drifted"
