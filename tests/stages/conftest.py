"""Fixtures for the sft/dpo stages: the shipped data, fast settings, a registry holding sft-v1."""

from __future__ import annotations

import shutil

import pytest

from adaptr import Registry, StageRequest, run_stage
from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

# Few short steps with a high learning rate: every test trains in about a second on a CPU.
FAST = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 64}
FAST_SFT = {**FAST, "learning_rate": 5e-3, "r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
FAST_DPO = {**FAST, "learning_rate": 5e-3}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny model trains fastest on one thread, and tests run side by side."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sft_data():
    return data_file(SFT_DATA)


@pytest.fixture(scope="session")
def dpo_data():
    return data_file(PREFERENCE_DATA)


@pytest.fixture(scope="session")
def sft_seed(tmp_path_factory, tiny_base_dir, sft_data):
    """A registry directory with base `tiny` and `sft-v1` trained on it (built once)."""
    from adaptr.bases import add_local_base

    root = tmp_path_factory.mktemp("seed") / "registry"
    registry = Registry.init(root)
    add_local_base(registry, "tiny", tiny_base_dir)
    run = run_stage(registry, StageRequest(stage="sft", base="tiny", data=str(sft_data), config=FAST_SFT))
    assert run["status"] == "succeeded"
    registry.close()
    return root


@pytest.fixture
def sft_registry(sft_seed, tmp_path):
    """A private copy of the seed registry: tests may train and publish in it freely."""
    root = tmp_path / "registry"
    shutil.copytree(sft_seed, root)
    registry = Registry(root / "adaptr.db")
    yield registry
    registry.close()


def first_logged(registry: Registry, ref: str) -> dict:
    return registry.resolve(ref)["record"]["first_logged"]


def logits(model):
    import torch

    ids = torch.tensor([[1, 40, 41, 42, 57, 90, 120, 7]])
    with torch.no_grad():
        return model(input_ids=ids).logits
