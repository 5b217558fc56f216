"""Helpers shared by the Hub tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import HUB_TOKEN as TOKEN  # noqa: F401  (the local Hub server's token)
from conftest import run_cli
from record_fixture import trained_record


def publish(registry, source: Path, name: str, *, parents=(), stage: str = "sft", base: str = "tiny",
            pickle: bool = True) -> dict:
    """Register a copy of ``source`` as the next version of ``name`` (with a training_args.bin)."""
    with registry.store.staging() as staged:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        if pickle:
            (staged / "training_args.bin").write_bytes(b"\x80\x04pickled-training-args")
        parent_nodes = [(registry.resolve(ref), relation, {}) for ref, relation in parents]
        return registry.publish_adapter(
            staged, name=name, base=base, stage=stage, parents=parent_nodes,
            config={"learning_rate": 1e-4, "epochs": 1}, metrics={"train_loss": 1.25},
            record=trained_record())


def card_metadata(text: str) -> dict:
    """The YAML front matter of a model card."""
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def record_at(hub, repo_id: str, revision: str) -> dict:
    return json.loads(hub.read_file(repo_id, revision, "adaptr.json"))


def pushed_chain(reg, lora_sources, hub_env) -> None:
    """sft-v1 -> sft-v2 (continued) -> dpo-v1 (stacked), pushed with --with-parents."""
    publish(reg, lora_sources[0], "sft")
    publish(reg, lora_sources[1], "sft", parents=[("sft-v1", "continued")])
    publish(reg, lora_sources[2], "dpo", parents=[("sft-v2", "stacked")], stage="dpo")
    run_cli("push", "dpo-v1", "--repo", "alice/dpo", "--with-parents", registry=reg, env=hub_env, check=True)


def upload_folder(folder: Path, repo_id: str, env: dict) -> None:
    """Publish a directory the way a PEFT user would: the real client, in its own process."""
    code = ("import sys; from huggingface_hub import HfApi; api = HfApi(); "
            "api.create_repo(sys.argv[1], exist_ok=True); "
            "api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, repo_id, str(folder)], env={**os.environ, **env}, check=True,
                   capture_output=True)
