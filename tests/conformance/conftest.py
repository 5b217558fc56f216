"""Fixtures of the conformance matrix: one tiny base per family, and per (family, configuration)
one registry whose artifacts (trained or imported versions) are made once, when a cell first
needs them, and shared by the cells of that group.

The model as it stood at the end of training is caught by a spy on ``training._publish`` (the
real function still runs): its logits on a probe and the adapter tensors it started from.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adaptr import Registry, StageRequest, run_stage
from adaptr.errors import AdaptrError

from .matrix import CONFIG, FAMILIES, Cell

# One optimizer step at a high learning rate: every adapter tensor that trains moves.
FAST = {"max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1, "max_length": 32,
        "learning_rate": 1e-2, "lora_dropout": 0.0, "seed": 0}
LORA = {"r": 4, "lora_alpha": 8}
PROBE = [[1, 40, 41, 42, 57, 90, 120, 7, 3, 200]]
CAUGHT: dict[str, dict] = {}  # version path -> {"logits", "initial"} at the end of training


def probe_logits(model):
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(PROBE)).logits.detach().clone()
    model.train(was_training)
    return out


@pytest.fixture(scope="session", autouse=True)
def _catch_end_of_training():
    import torch

    from adaptr.hf import training

    torch.set_num_threads(1)  # tiny models train fastest on one thread; xdist runs two workers
    original = training._publish

    def spy(ctx, plan, built, *args):
        logits = probe_logits(built.model)
        version = original(ctx, plan, built, *args)
        CAUGHT[version["path"]] = {"logits": logits, "initial": built.initial_adapter}
        return version

    patch = pytest.MonkeyPatch()
    patch.setattr(training, "_publish", spy)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def family_bases(tmp_path_factory):
    """family name -> a tiny generated base directory (made on first use)."""
    from adaptr.hf.tiny import make_tiny_base

    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_tiny_base(tmp_path_factory.mktemp(f"base-{name}") / name, family=name,
                                        hidden_size=32)
        return made[name]

    return get


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """Four rows of the shipped SFT and preference data."""
    from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

    root = tmp_path_factory.mktemp("data")
    out = {}
    for kind, name in (("sft", SFT_DATA), ("dpo", PREFERENCE_DATA)):
        lines = data_file(name).read_text().splitlines()[:4]
        out[kind] = root / f"{kind}.jsonl"
        out[kind].write_text("\n".join(lines) + "\n")
    return out


class Refused(Exception):
    """An artifact this group cannot have (its making is a refused or n/a cell)."""


@dataclass
class Group:
    """The registry of one (family, configuration) and its artifacts, made on demand."""

    family: str
    config: str
    root: Path
    base_dir: Path
    data: dict
    registry: Registry = None
    made: dict = field(default_factory=dict)

    def __post_init__(self):
        from adaptr.bases import add_local_base

        self.registry = Registry.init(self.root / "registry")
        add_local_base(self.registry, "base", self.base_dir)

    @property
    def settings(self) -> dict:
        return CONFIG[self.config].settings(FAMILIES[self.family])

    def request(self, op: str) -> StageRequest:
        """The stage request an operation makes (``sft``, ``dpo``, the modes from P). Versions are
        named ``c.OP``: refs with a dot, which PEFT adapter names may not have."""
        kind = "dpo" if op in ("dpo", "dpo-continue", "merge-mode") else "sft"
        data = str(self.data[kind])
        if op in ("sft", "dpo"):
            return StageRequest(stage=kind, base="base", data=data, name=f"c.{op}",
                                config={**FAST, **LORA, **self.settings})
        mode = {"continue": "continue", "dpo-continue": "continue", "stack": "stack",
                "merge-mode": "merge"}[op]
        return StageRequest(stage=kind, parent=self.artifact("P")["ref"], mode=mode, data=data,
                            name=f"c.{op}", config=dict(FAST))

    def train(self, op: str) -> dict:
        if op not in self.made:
            run = run_stage(self.registry, self.request(op))
            assert run["status"] == "succeeded", run
            self.made[op] = self.registry.resolve(run["output_ref"])
        return self.made[op]

    def peft_dir(self, seed: int = 0) -> Path:
        """An adapter made with plain PEFT in this configuration (lora_B perturbed)."""
        key = f"peft-{seed}"
        if key not in self.made:
            self.made[key] = make_peft_adapter(self.base_dir, self.root / key, self.settings,
                                               CONFIG[self.config].adapter_name, seed)
        return self.made[key]

    def imported(self) -> dict:
        if "import" not in self.made:
            from adaptr.peftdir import import_adapter

            self.made["import"] = import_adapter(self.registry, self.peft_dir(), base="base", name="c.import")
        return self.made["import"]

    def artifact(self, which: str) -> dict:
        """P (trained by adaptr's sft, else imported), C (P continued) or S (stacked on P)."""
        from .matrix import outcome

        if which == "P":
            if CONFIG[self.config].trained and outcome(self.family, self.config, "sft").kind == "pass":
                return self.train("sft")
            return self.imported()
        op = {"C": "continue", "S": "stack"}[which]
        if outcome(self.family, self.config, op).kind != "pass":
            raise Refused(f"{op} is not a passing cell here")
        return self.train(op)


def make_peft_adapter(base_dir: Path, out_dir: Path, settings: dict, adapter_name: str, seed: int) -> Path:
    """``get_peft_model`` + ``save_pretrained``, B perturbed so the adapter changes the model."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from adaptr.hf.recipe import init_lora_weights, target_modules

    kwargs = {**LORA, **settings, "lora_dropout": 0.0}
    kwargs["target_modules"] = target_modules(kwargs["target_modules"])
    kwargs["init_lora_weights"] = init_lora_weights(kwargs.get("init_lora_weights"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, LoraConfig(**kwargs), adapter_name=adapter_name)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


@pytest.fixture(scope="session")
def groups(tmp_path_factory, family_bases, data_files):
    """``groups(family, config)``: the shared :class:`Group` of that pair."""
    made: dict[tuple[str, str], Group] = {}

    def get(family: str, config: str) -> Group:
        if (family, config) not in made:
            # Each training starts with accelerate's gc.collect(), whose cost grows with everything
            # this long session holds; objects alive now are moved out of its way.
            gc.collect()
            gc.freeze()
            root = tmp_path_factory.mktemp(f"{family}-{config}")
            made[(family, config)] = Group(family, config, root, family_bases(family), data_files)
        return made[(family, config)]

    return get


@pytest.fixture
def group(groups, cell: Cell) -> Group:
    return groups(cell.family, cell.config)


def assert_refused(registry: Registry, action, reason: str) -> AdaptrError:
    """``action()`` must raise an AdaptrError saying ``reason``, on one line with a hint, and
    leave the registry exactly as it was: no run row, no run directory, no file."""
    from conftest import dump_registry

    before, runs_before, dirs_before = dump_registry(registry.root), _runs(registry), _run_dirs(registry)
    with pytest.raises(AdaptrError) as caught:
        action()
    error = caught.value
    assert reason in str(error), str(error)
    assert error.hint and "\n" not in str(error), str(error)
    assert _runs(registry) == runs_before
    assert _run_dirs(registry) == dirs_before
    assert dump_registry(registry.root) == before
    return error


def _runs(registry: Registry) -> list:
    return [row["id"] for row in registry.query("SELECT id FROM runs ORDER BY id")]


def _run_dirs(registry: Registry) -> list:
    runs_dir = Path(registry.root) / "runs"
    return sorted(p.name for p in runs_dir.iterdir()) if runs_dir.is_dir() else []


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
