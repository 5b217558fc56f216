"""Greedy generation on a prompt file; every output is stored and scored.

A prompt file is JSONL/JSON/CSV/Parquet with ``prompt`` (a string, or a list of messages, which
go through the tokenizer's chat template with the generation prompt) and, for the exact and
regex scorers, ``expected``. Decoding is greedy (``do_sample=False``), so the same model gives
the same outputs. The metric ``score`` is the mean of the per-row scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import common, scorers


@dataclass
class Prompts:
    rows: list[dict]
    numbers: list[int]
    scorer: object
    format: str = "prompts"


def check(job) -> None:
    from adaptr import UsageError
    from adaptr.trl_stage import read_rows

    rows, numbers = read_rows(job.data_path)
    if not rows:
        raise UsageError(f"{job.data_path} holds no rows", "add prompts to the file")
    for row, number in zip(rows, numbers):
        _check_prompt(job.data_path, number, row)
    common.check_positive(job, "batch_size", "max_new_tokens")
    scorer = scorers.resolve(job.settings, rows, numbers, job.data_path)
    job.data = Prompts(rows=rows, numbers=numbers, scorer=scorer)


def _check_prompt(path, number: int, row: dict) -> None:
    from adaptr import UsageError

    prompt = row.get("prompt")
    ok = isinstance(prompt, str) and prompt.strip()
    if isinstance(prompt, list) and prompt:
        ok = all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                 for m in prompt)
    if not ok:
        raise UsageError(f"{path}: row {number}: key 'prompt' must be a non-empty string or a list of "
                         "{\"role\": ..., \"content\": ...} messages",
                         "each row is {\"prompt\": ..., \"expected\": ...}; see docs/evaluations.md")
    if "expected" in row and not isinstance(row["expected"], str):
        raise UsageError(f"{path}: row {number}: key 'expected' must be a string",
                         "write the expected output as text")


def _encode(tokenizer, prompts: list, where: str):
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             if isinstance(p, list) else p for p in prompts]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(where)


def generate(model, tokenizer, prompts: list, settings, job=None) -> list[str]:
    import torch

    where, outputs = common.device(), []
    tokenizer.padding_side = "left"  # decoder-only models continue the right end of each row
    with torch.inference_mode():
        for start in range(0, len(prompts), settings.batch_size):
            chunk = prompts[start:start + settings.batch_size]
            encoded = _encode(tokenizer, chunk, where)
            generated = model.generate(**encoded, do_sample=False, num_beams=1, temperature=None,
                                       top_p=None, top_k=None, max_new_tokens=settings.max_new_tokens,
                                       pad_token_id=tokenizer.pad_token_id)
            new = generated[:, encoded["input_ids"].size(1):]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
            if job is not None:
                job.advance(len(chunk))
    return outputs


def run(job) -> None:
    common.quiet()
    tokenizer = common.tokenizer(job)
    prompts = [row["prompt"] for row in job.data.rows]
    job.start(len(prompts) * len(job.pending), f"generate on {job.eval_set['name']}")
    for target in job.pending:
        model = common.load_model(job, target.node)
        texts = generate(model, tokenizer, prompts, job.settings, job)
        del model
        common.release()
        if job.should_stop():
            return
        outputs = [{"row": number, "prompt": row["prompt"], "output": text, "expected": row.get("expected"),
                    "score": job.data.scorer.score(text, row, number)}
                   for row, number, text in zip(job.data.rows, job.data.numbers, texts)]
        mean = sum(o["score"] for o in outputs) / len(outputs)
        job.add_result(target, {"score": mean}, outputs=outputs,
                       record={"scorer": job.data.scorer.name, "rows": len(outputs), "device": common.device()})
