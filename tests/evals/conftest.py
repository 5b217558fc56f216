"""Fixtures for evaluations: a registry holding sft-v1 and dpo-v1 (trained once), the held-out sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adaptr import Registry, StageRequest, run_stage
from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

FAST = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 64}
FAST_SFT = {**FAST, "learning_rate": 5e-3, "r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
FAST_DPO = {**FAST, "learning_rate": 5e-3}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def heldout_prefs() -> Path:
    return data_file("preferences-heldout.jsonl")


@pytest.fixture(scope="session")
def heldout_sft() -> Path:
    return data_file("sft-heldout.jsonl")


@pytest.fixture(scope="session")
def heldout_prompts() -> Path:
    return data_file("prompts-heldout.jsonl")


@pytest.fixture(scope="session")
def lineage_seed(tmp_path_factory, tiny_base_dir):
    """A registry directory with base `tiny`, sft-v1 on it and dpo-v1 continuing sft-v1."""
    from adaptr.bases import add_local_base

    root = tmp_path_factory.mktemp("evalseed") / "registry"
    registry = Registry.init(root)
    add_local_base(registry, "tiny", tiny_base_dir)
    for request in (StageRequest(stage="sft", base="tiny", data=str(data_file(SFT_DATA)), name="sft",
                                 config=FAST_SFT),
                    StageRequest(stage="dpo", parent="sft-v1", data=str(data_file(PREFERENCE_DATA)),
                                 name="dpo", config=FAST_DPO)):
        assert run_stage(registry, request)["status"] == "succeeded"
    registry.close()
    return root


@pytest.fixture
def eval_registry(lineage_seed, tmp_path):
    """A private copy of the seed registry."""
    root = tmp_path / "registry"
    shutil.copytree(lineage_seed, root)
    registry = Registry(root / "adaptr.db")
    yield registry
    registry.close()


def counts(registry) -> dict[str, int]:
    return {table: registry.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
            for table in ("evaluations", "eval_metrics", "eval_outputs", "runs")}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
