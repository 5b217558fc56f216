"""Registries for the TUI tests: small fake-but-valid adapter versions, no training; their
records are the record a real training run writes (tests/record_fixture.py).

Versions go through ``registry.publish_adapter`` from directories written into
``registry.store.staging()``; timestamps and run ids are then fixed so snapshots are stable.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import pytest

from adaptr import Registry
from record_fixture import trained_record

FIXED_DAY = "2026-01-15"
LORA_CONFIG = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def _safetensors_bytes(tensors: dict[str, list[int]]) -> bytes:
    """A valid .safetensors file of zero-filled F32 tensors with the given shapes."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def write_adapter_dir(directory: Path, config: dict | None = None) -> None:
    """What PEFT writes for a LoRA adapter: adapter_config.json and adapter_model.safetensors."""
    lora = {**LORA_CONFIG, **(config or {})}
    peft_config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
                   "r": lora["r"], "lora_alpha": lora["lora_alpha"],
                   "lora_dropout": lora["lora_dropout"], "target_modules": lora["target_modules"]}
    (directory / "adapter_config.json").write_text(json.dumps(peft_config, indent=1))
    tensors = {}
    for module in lora["target_modules"]:
        tensors[f"base_model.model.model.layers.0.self_attn.{module}.lora_A.weight"] = [lora["r"], 64]
        tensors[f"base_model.model.model.layers.0.self_attn.{module}.lora_B.weight"] = [64, lora["r"]]
    (directory / "adapter_model.safetensors").write_bytes(_safetensors_bytes(tensors))
    (directory / "README.md").write_text("# fake adapter for the TUI tests\n")


def add_fake_base(registry: Registry, name: str = "tiny") -> dict:
    return registry.add_base(
        name, source="example/tiny-llama", source_kind="hub", revision="0123456789abcdef0123",
        info={"config_sha256": "c" * 64, "tokenizer_sha256": "d" * 64, "num_parameters": 1_234_567,
              "dtype": "float32", "architecture": "LlamaForCausalLM"})


def publish_fake(registry: Registry, name: str, *, base: str = "tiny", stage: str = "sft",
                 parents=(), metrics: dict | None = None, run_id: str | None = None,
                 config: dict | None = None, record: dict | None = None) -> dict:
    with registry.store.staging("test") as staged:
        write_adapter_dir(staged, config)
        return registry.publish_adapter(
            staged, name=name, base=base, stage=stage, parents=list(parents),
            config={**LORA_CONFIG, "learning_rate": 2e-4, "num_train_epochs": 1, **(config or {})},
            record=record or trained_record(),
            metrics=metrics or {}, run_id=run_id)


def add_fixed_run(registry: Registry, run_id: str, *, stage: str = "sft", status: str = "succeeded",
                  step: int = 0, total: int | None = None, created: str = "09:00:00",
                  losses: list[float] = (), log: list[str] = (), error: str | None = None) -> dict:
    """A run row with a fixed id and times, its loss curve, and a log file."""
    run_dir = registry.root / "runs" / run_id
    run_dir.mkdir(parents=True)
    with registry.write():
        registry.db["runs"].insert({
            "id": run_id, "stage": stage, "status": status, "executor": "local",
            "request": json.dumps({"stage": stage, "base": "tiny", "data": "data/train.jsonl",
                                   "mode": "continue"}),
            "config": json.dumps(LORA_CONFIG), "run_dir": f"runs/{run_id}",
            "progress_step": step, "progress_total": total, "error": error,
            "created_at": f"{FIXED_DAY}T{created}.000+00:00",
            "started_at": f"{FIXED_DAY}T{created}.500+00:00",
            "ended_at": None if status in ("queued", "running")
            else f"{FIXED_DAY}T{created[:3]}59:00.000+00:00",
        })
    for i, loss in enumerate(losses):
        registry.add_metrics(run_id, (i + 1) * 5, {"loss": loss})
    (run_dir / "run.log").write_text("".join(line + "\n" for line in log))
    return registry.run(run_id)


def fix_times(registry: Registry) -> None:
    """Give every adapter a fixed created_at (minute = its id), so listings are deterministic."""
    with registry.write():
        for row in registry.query("SELECT id FROM adapters ORDER BY id"):
            registry.db.execute("UPDATE adapters SET created_at = ? WHERE id = ?",
                                [f"{FIXED_DAY}T10:{row['id']:02d}:00.000+00:00", row["id"]])
        registry.db.execute("UPDATE bases SET created_at = ?", [f"{FIXED_DAY}T08:00:00.000+00:00"])


LOSSES = [2.31, 2.05, 1.82, 1.66, 1.49, 1.41, 1.30, 1.22, 1.18, 1.11, 1.07, 1.02, 0.99, 0.97, 0.95,
          0.93, 0.92, 0.91, 0.90, 0.89]


def build_lineage_registry(root: Path) -> Registry:
    """A small registry with every relation: continued, stacked, merged (through a derived base)."""
    registry = Registry.init(root)
    add_fake_base(registry, "tiny")
    add_fixed_run(registry, "20260115-090000-a1b2", losses=LOSSES, step=100, total=100,
                  log=["[adaptr] sft: 100 steps", "[adaptr] step 100 loss=0.89", "[adaptr] published sft-v1"])
    sft1 = publish_fake(registry, "sft", run_id="20260115-090000-a1b2",
                        metrics={"train_loss": 0.89, "train_runtime": 12.5},
                        record=trained_record(loss_curve=[[(i + 1) * 5, loss] for i, loss in enumerate(LOSSES)]))
    sft2 = publish_fake(registry, "sft", parents=[(sft1, "continued", {"mode": "continue"})],
                        metrics={"train_loss": 0.81, "eval_loss": 0.92, "loss_curve": [1.2, 1.0, 0.9, 0.81]})
    publish_fake(registry, "dpo", stage="dpo", parents=[(sft2, "continued", {"mode": "continue",
                                                                            "reference": "frozen parent"})],
                 metrics={"train_loss": 0.52})
    publish_fake(registry, "stack", parents=[(sft1, "stacked", {"mode": "stack"})],
                 metrics={"train_loss": 1.01}, config={"r": 4})
    with registry.store.staging("base") as staged:
        (staged / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        (staged / "model.safetensors").write_bytes(_safetensors_bytes({"lm_head.weight": [4, 4]}))
        registry.publish_base(staged, name="tiny-sft", source="merge:sft-v2",
                              parents=[(sft2, "merged", {"method": "merge_and_unload"})],
                              info={"num_parameters": 1_234_567, "dtype": "float32",
                                    "architecture": "LlamaForCausalLM"})
    publish_fake(registry, "dpo", stage="dpo", base="tiny-sft",
                 parents=[(sft2, "merged", {"mode": "merge"})], metrics={"train_loss": 0.48})
    add_fixed_run(registry, "20260115-093000-c3d4", stage="dpo", status="failed", step=12, total=50,
                  created="09:30:00", losses=LOSSES[:3],
                  log=["[adaptr] dpo: 50 steps", "Traceback (most recent call last):",
                       "ValueError: bad batch"],
                  error="ValueError: bad batch")
    add_fixed_run(registry, "20260115-094500-e5f6", stage="sft", status="cancelled", step=40, total=80,
                  created="09:45:00", losses=LOSSES[:8], log=["[adaptr] sft: 80 steps", "[adaptr] cancelled"])
    fix_times(registry)
    return registry


@pytest.fixture
def lineage_registry(tmp_path) -> Registry:
    registry = build_lineage_registry(tmp_path / "registry")
    yield registry
    registry.close()


def bulk_adapters(registry: Registry, count: int, name: str = "bulk", base: str = "tiny") -> None:
    """``count`` versions of ``name`` fast: one real published directory, the other rows in SQL.

    Browsing reads rows, not files, so sharing one directory is enough for paging tests and the
    benchmark; each row still has its own node, version, metrics and time.
    """
    first = publish_fake(registry, name, base=base, metrics={"train_loss": 2.0})
    with registry.write() as db:
        for version in range(2, count + 1):
            node = db.execute("INSERT INTO nodes (kind) VALUES ('adapter')").lastrowid
            db.execute(
                "INSERT INTO adapters (id, name, version, base_id, stage, status, path, sha256, config, "
                "record, metrics, created_at) VALUES (?, ?, ?, ?, 'sft', 'ready', ?, ?, ?, '{}', ?, ?)",
                [node, name, version, first["base_id"], registry.store.relative(first["path"]),
                 first["sha256"], json.dumps(LORA_CONFIG),
                 json.dumps({"train_loss": round(2.0 / version, 4)}), _bulk_time(version)])
        db.execute("UPDATE adapters SET created_at = ? WHERE id = ?", [_bulk_time(1), first["id"]])


def _bulk_time(version: int) -> str:
    moment = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=version)
    return moment.isoformat(timespec="milliseconds")


TOY_PLUGIN_DIR = Path(__file__).resolve().parent / "toyplugin"


@pytest.fixture
def toy_stage(monkeypatch):
    """Register stage ``tuitoy`` (tests/tui/toyplugin) with adaptr's plugin manager."""
    from adaptr import plugins

    monkeypatch.syspath_prepend(str(TOY_PLUGIN_DIR))
    plugins.load_plugins()
    if plugins.pm.get_plugin("tuitoy") is None:
        import adaptr_tuitoy

        plugins.pm.register(adaptr_tuitoy, name="tuitoy")
    yield "tuitoy"
    plugins.pm.unregister(name="tuitoy")
