"""Held-out loss and perplexity on SFT data, with SFTTrainer's own tokenisation and masking.

The rows go through ``SFTTrainer._prepare_dataset`` (chat template, EOS, completion and assistant
masks, truncation: exactly what training sees) and TRL's ``DataCollatorForLanguageModeling``. The
loss is the mean negative log-likelihood over every labelled token of the set (not a mean of batch
means), and the perplexity its exponential.
"""

from __future__ import annotations

import math
import time

from . import common


class _SftPreparation:
    """The attributes ``SFTTrainer._prepare_dataset`` reads from its trainer, decided as its
    ``__init__`` decides them; the trainer itself needs a model and an accelerator we do not."""

    def __init__(self, tokenizer, settings, first_row: dict):
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        self._tokenizer = tokenizer
        self.completion_only_loss = settings.completion_only_loss
        if self.completion_only_loss is None:
            self.completion_only_loss = "prompt" in first_row and "completion" in first_row
        self.chat_template = None
        if settings.assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
            self.chat_template = get_training_chat_template(tokenizer)


def check(job) -> None:
    from adaptr import UsageError
    from adaptr.trl_stage import MESSAGES, PROMPT_COMPLETION, TEXT, load_data

    job.data = load_data(job.data_path, (MESSAGES, PROMPT_COMPLETION, TEXT))
    common.check_positive(job, "batch_size", "max_length")
    if job.settings.assistant_only_loss and job.data.format == "text":
        raise UsageError(f"{job.data_path}: assistant_only_loss needs conversational rows, not text",
                         "drop --set assistant_only_loss=true, or use messages data")


def prepare(job, tokenizer) -> list[dict]:
    """The collated batches of the eval set, as SFTTrainer would build them."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = job.data.rows
    args = common.trl_args(SFTConfig, max_length=job.settings.max_length,
                           assistant_only_loss=job.settings.assistant_only_loss)
    holder = _SftPreparation(tokenizer, job.settings, rows[0])
    dataset = SFTTrainer._prepare_dataset(holder, Dataset.from_list(rows), tokenizer, args, False, None, "eval")
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    return common.batches(dataset, collator, job.settings.batch_size)


def summed_nll(model, batches: list[dict], job=None) -> tuple[float, int]:
    """Negative log-likelihood summed over labelled tokens, and their count."""
    import torch

    where = common.device()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            batch = common.on_device(batch, where)
            logps = common.token_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            total -= logps.double().sum().item()
            tokens += int((batch["labels"][:, 1:] != -100).sum().item())
            if job is not None:
                job.advance()
    return total, tokens


def run(job) -> None:
    common.quiet()
    tokenizer = common.tokenizer(job)
    batches = prepare(job, tokenizer)
    scored_rows = sum(len(b["input_ids"]) for b in batches)
    job.start(len(batches) * len(job.pending), f"loss on {job.eval_set['name']}")
    for target in job.pending:
        model = common.load_model(job, target.node)
        started = time.perf_counter()
        nll, tokens = summed_nll(model, batches, job)
        seconds = time.perf_counter() - started
        del model
        common.release()
        if job.should_stop():
            return
        loss = nll / max(tokens, 1)
        job.add_result(target, {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}, record={
            "tokens": tokens, "rows_scored": scored_rows, "rows_dropped": len(job.data.rows) - scored_rows,
            "seconds": round(seconds, 4), "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "device": common.device()})
