"""What the built-in evaluators share: the device, a target's model, TRL's pieces, batching.

Models load the way :func:`adaptr.load` loads them (stacked chains included). Rows are prepared
and collated by TRL (the trainers' own code). Per-token log-probabilities (:func:`token_logps`)
run the model's backbone once and project through its LM head only the positions that have a
label: no ``(batch, length, vocab)`` logits for padding and prompts. That is what TRL's fused LM
head does on a GPU with Triton; on other devices TRL scores every position in tiles, which
measured 3x slower than a plain transformers forward on CPU (docs/performance.md).
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


def load_model(job, node: dict):
    """The eval-mode model of a version or base, on the evaluation device."""
    import adaptr

    return adaptr.load(node["ref"], registry=job.registry, device_map={"": 0} if device() == "cuda" else None)


# Config attributes by which a model transforms its logits after the LM head (Gemma's
# softcapping, Cohere's and Granite's scales...): such models are scored through their own forward.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def token_logps(model, input_ids, attention_mask, labels):
    """log p(label_t | tokens before t) for each position with a label, 0 elsewhere: (batch, len-1)."""
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = labels[:, 1:]
    mask = targets != -100
    text_config = causal.config.get_text_config()
    if any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
        picked = logits[mask]
    else:
        hidden = causal.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state[:, :-1]
        picked = causal.get_output_embeddings()(hidden[mask])
    logps = -F.cross_entropy(picked.float(), targets[mask], reduction="none")
    return logps.new_zeros(mask.shape).masked_scatter(mask, logps)


def release() -> None:
    """Return a dropped model's memory (call after ``del model``)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def tokenizer(job):
    from adaptr.trl_stage import load_tokenizer

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
