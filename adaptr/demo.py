"""`adaptr demo`: a whole lineage on a tiny generated model, in well under a minute on a CPU.

Generates a tiny Llama-shaped base (no download), registers it, trains ``sft`` on the shipped
SFT data, continues it with ``dpo --from sft-v1`` on the shipped preference data, merges the DPO
adapter into a derived base when merge support is installed, copies the held-out eval sets
(``EVAL_SETS``), and returns the registry.

The registry goes where ``adaptr init`` puts one, ``DIRECTORY/registry``, so every command typed
in that directory finds it as it finds any registry; the demo's own files (the generated model,
the eval sets) go into ``DIRECTORY/adaptr-demo/``.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from .errors import ConflictError
from .registry import Registry
from .stages import StageRequest, run_stage

BASE_NAME = "tiny"
SFT_DATA = "sft.jsonl"
PREFERENCE_DATA = "preferences.jsonl"
PROMPTS_DATA = "prompts.jsonl"  # grpo: prompts, with each one's `answer` for a reward to read
UNPAIRED_DATA = "unpaired.jsonl"  # kto: prompt/completion/label
# Held out from training, copied into the demo directory for `adaptr eval`.
EVAL_SETS = ("preferences-heldout.jsonl", "sft-heldout.jsonl", "prompts-heldout.jsonl")
# Few steps and a high learning rate: the demo shows the mechanics, not a useful model.
SFT_SETTINGS = {"max_steps": 12, "learning_rate": 2e-3, "logging_steps": 2, "r": 8, "lora_alpha": 16}
DPO_SETTINGS = {"max_steps": 8, "learning_rate": 1e-3, "logging_steps": 2, "beta": 0.1}
FILES_DIR = "adaptr-demo"


def data_file(name: str) -> Path:
    """A data file shipped in the package (``adaptr/data``)."""
    return Path(str(resources.files("adaptr") / "data" / name))


def run_demo(directory: Path | str, *, reporter=None, echo=print) -> Registry:
    """Run the demo in ``directory``: its registry at ``directory/registry``."""
    from .registry import DB_NAME, DEFAULT_DIR

    directory = Path(directory).resolve()
    if (directory / DEFAULT_DIR / DB_NAME).exists():
        raise ConflictError(f"{directory} already holds a registry ({DEFAULT_DIR}/{DB_NAME})",
                            "run the demo in an empty directory: `adaptr demo --dir DIR`")
    started = time.monotonic()
    import torch

    # A model this small gains nothing from more threads, and loses a lot on a busy machine.
    torch.set_num_threads(1)
    from .bases import add_local_base
    from .hf.tiny import make_tiny_base

    registry = Registry.init(directory / DEFAULT_DIR)
    files = directory / FILES_DIR
    base_dir = make_tiny_base(files / "tiny-llama")
    add_local_base(registry, BASE_NAME, base_dir)
    echo(f"generated and registered base `{BASE_NAME}` ({base_dir})")
    steps = [
        ("adaptr train sft --base tiny --data sft.jsonl",
         StageRequest(stage="sft", base=BASE_NAME, data=str(data_file(SFT_DATA)), name="sft",
                      config=SFT_SETTINGS)),
        ("adaptr train dpo --from sft-v1 --data preferences.jsonl",
         StageRequest(stage="dpo", parent="sft-v1", data=str(data_file(PREFERENCE_DATA)), name="dpo",
                      config=DPO_SETTINGS)),
    ]
    for command, request in steps:
        echo(f"$ {command}")
        run = run_stage(registry, request, reporter=reporter)
        echo(f"  -> {run['output_ref']} ({run['status']})")
    _merge(registry, echo)
    for name in EVAL_SETS:
        (files / name).write_bytes(data_file(name).read_bytes())
    echo(f"held-out eval sets: {', '.join(EVAL_SETS)} in {files}")
    echo(f"demo finished in {time.monotonic() - started:.1f}s; registry at {registry.root}")
    return registry


def _merge(registry: Registry, echo) -> None:
    from . import plugins

    if "merge" not in plugins.stages():
        return
    echo("$ adaptr merge dpo-v1 --into-base --dtype fp32")
    request = StageRequest(stage="merge", parent="dpo-v1", config={"into_base": True, "dtype": "fp32"})
    run = run_stage(registry, request)
    echo(f"  -> derived base {run['output_ref']} ({run['status']})")
