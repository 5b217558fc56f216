"""Fixtures for the integrity tests: a small real registry, copied fresh for each test.

The template holds base `tiny`, `sft-v1` trained with TRL, and `st-v1` trained stacked on it
(a real chain), plus `imp-v1` imported from a PEFT directory. Tests damage copies of it and
check, through the real CLI, that nothing damaged is used and that refusals change nothing.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from adaptr import Registry, StageRequest, run_stage
from adaptr.bases import add_local_base
from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

FAST = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 48,
        "learning_rate": 5e-3, "r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


@pytest.fixture(scope="session")
def integrity_template(tmp_path_factory, tiny_base_dir) -> Path:
    import torch
    from lora_dirs import make_lora_dir

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("integrity") / "registry"
    registry = Registry.init(root)
    # The base inside the registry directory (recorded relative to it), so every copy of the
    # registry has its own copy of the base to damage.
    base_dir = shutil.copytree(tiny_base_dir, root / "models" / "tiny")
    add_local_base(registry, "tiny", base_dir)
    for request in (StageRequest(stage="sft", base="tiny", data=str(data_file(SFT_DATA)), config=FAST),
                    StageRequest(stage="dpo", parent="sft-v1", mode="stack", name="st",
                                 data=str(data_file(PREFERENCE_DATA)), config=FAST)):
        assert run_stage(registry, request)["status"] == "succeeded"
    from adaptr.peftdir import import_adapter

    import_adapter(registry, make_lora_dir(base_dir, root.parent / "peft-lora"), base="tiny", name="imp")
    registry.close()
    return root


@pytest.fixture
def reg_dir(integrity_template, tmp_path) -> Path:
    """A private copy of the template registry, its base included (under models/tiny)."""
    return shutil.copytree(integrity_template, tmp_path / "registry")


def flip_byte(path: Path, offset: int = -1) -> None:
    """Change one byte of ``path`` in place (same size: only hashing can tell)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_listing(root: Path) -> list[tuple[str, str]]:
    """Every file under ``root`` with its sha256: for "nothing changed" comparisons of any file."""
    return sorted((str(p.relative_to(root)), file_digest(p)) for p in Path(root).rglob("*") if p.is_file())
