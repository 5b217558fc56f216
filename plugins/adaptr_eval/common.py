"""What the built-in evaluators share: the device, a target's model, TRL's pieces, batching.

Models load the way :func:`adaptr.load` loads them (stacked chains included). Per-token
log-probabilities come from TRL's fused LM head (``add_fused_lm_head``), the same function the
SFT and DPO trainers compute their losses with: it projects only the positions that have a
label, so no ``(batch, length, vocab)`` logits are built.
"""

from __future__ import annotations

import gc
import tempfile
import warnings


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet() -> None:
    import datasets
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl)\.")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_model(job, node: dict, *, fused: bool = True):
    """The eval-mode model of a version or base, on the evaluation device."""
    from adaptr.hf.loading import load_ref

    model = load_ref(job.registry, node["ref"], device_map={"": 0} if device() == "cuda" else None)
    if fused:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model.get_base_model() if hasattr(model, "get_base_model") else model)
    return model


def release() -> None:
    """Return a dropped model's memory (call after ``del model``)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def tokenizer(job):
    from adaptr.hf.loading import load_tokenizer

    return load_tokenizer(job.targets[0].base)  # every target shares it (checked when planned)


def trl_args(config_class, **kwargs):
    """A TRL config for the dataset preparation (nothing is trained or written to output_dir)."""
    return config_class(output_dir=tempfile.gettempdir(), report_to=[], use_cpu=device() == "cpu",
                        **kwargs)


def batches(dataset, collator, size: int) -> list[dict]:
    """Collated batches in dataset order (the same batches for every target)."""
    rows = [dataset[i] for i in range(len(dataset))]
    return [collator(rows[i:i + size]) for i in range(0, len(rows), size)]


def on_device(batch: dict, where: str) -> dict:
    return {k: v.to(where) if hasattr(v, "to") else v for k, v in batch.items()}


def check_positive(job, *names: str) -> None:
    from adaptr import UsageError

    for name in names:
        value = getattr(job.settings, name)
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{job.evaluator.name} setting {name}={value!r} must be a positive number",
                             f"write e.g. --set {name}=8")
