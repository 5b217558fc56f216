"""Preference accuracy and reward margin: DPO's implicit reward against a reference model.

For each pair, reward = beta * (log p(completion | prompt) under the target - the same under the
reference), summed over the completion's tokens as DPOTrainer sums them; accuracy is the share of
pairs whose chosen reward exceeds the rejected one, margin the mean difference (TRL's
``rewards/accuracies`` and ``rewards/margins``, over the whole set rather than per batch).

The pairs are tokenised by ``DPOTrainer._prepare_dataset`` and collated by TRL's
``DataCollatorForPreference``. Each model is loaded once, one at a time, and its log-probabilities
are kept: a version that is both evaluated and another one's reference is computed once.
"""

from __future__ import annotations

import time

from . import common


class _DpoPreparation:
    """What ``DPOTrainer._prepare_dataset`` reads from its trainer: the tokenizer."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer


def check(job) -> None:
    from adaptr.trl_stage import PREFERENCE, load_data

    job.data = load_data(job.data_path, (PREFERENCE,))
    common.check_positive(job, "batch_size", "max_length")


def prepare(job, tokenizer) -> list[dict]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    args = common.trl_args(DPOConfig, max_length=job.settings.max_length, beta=job.settings.beta)
    dataset = DPOTrainer._prepare_dataset(_DpoPreparation(tokenizer), Dataset.from_list(job.data.rows),
                                          tokenizer, args, "eval")
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                         truncation_mode=args.truncation_mode)
    return common.batches(dataset, collator, job.settings.batch_size)


def sequence_logps(model, batches: list[dict], job=None):
    """Completion log-probabilities (chosen, rejected), as DPOTrainer computes them."""
    import torch

    where = common.device()
    chosen, rejected = [], []
    with torch.inference_mode():
        for batch in batches:
            batch = common.on_device(batch, where)
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            per_token = common.token_logps(model, batch["input_ids"], batch["attention_mask"], labels)
            logps = per_token.double().sum(dim=1).cpu()
            c, r = logps.chunk(2, dim=0)
            chosen.append(c)
            rejected.append(r)
            if job is not None:
                job.advance()
    return torch.cat(chosen), torch.cat(rejected)


def rewards(beta: float, policy, reference) -> dict[str, float]:
    chosen = beta * (policy[0] - reference[0])
    rejected = beta * (policy[1] - reference[1])
    return {"accuracy": (chosen > rejected).double().mean().item(),
            "margin": (chosen - rejected).mean().item(),
            "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item()}


def run(job) -> None:
    common.quiet()
    batches = prepare(job, common.tokenizer(job))
    needed = []
    for target in job.pending:
        for node in (target.node, target.reference):
            if node["id"] not in {n["id"] for n in needed}:
                needed.append(node)
    job.start(len(batches) * len(needed), f"preference on {job.eval_set['name']}")
    logps, seconds = {}, {}
    for node in needed:  # one model in memory at a time
        model = common.load_model(job, node)
        started = time.perf_counter()
        logps[node["id"]] = sequence_logps(model, batches, job)
        seconds[node["id"]] = time.perf_counter() - started
        del model
        common.release()
        if job.should_stop():
            return
    pairs = int(logps[needed[0]["id"]][0].numel())
    for target in job.pending:
        metrics = rewards(job.settings.beta, logps[target.node["id"]], logps[target.reference["id"]])
        job.add_result(target, metrics, record={
            "pairs_scored": pairs, "pairs_dropped": len(job.data.rows) - pairs,
            "reference": target.reference["ref"], "seconds": round(seconds[target.node["id"]], 4),
            "device": common.device()})
