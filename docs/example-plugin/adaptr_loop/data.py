"""Training data: a JSONL file with one ``{"text": ...}`` object per line."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from adaptr import UsageError

EXAMPLE_ROW = '{"text": "..."}'


def read_texts(path: Path) -> list[str]:
    """The ``text`` of every row; an error names the row (its line number) and the key.

    Cheap (no tokenizer, no torch), so the stage's ``check`` runs it before anything is written.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} not found", "check the path given to --data")
    texts = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    texts.append(_text_of(path, number, line))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason})", "save the file as UTF-8") from None
    if not texts:
        raise UsageError(f"{path} has no rows", f"write one JSON object per line, like {EXAMPLE_ROW}")
    return texts


def _text_of(path: Path, number: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}, row {number}: not valid JSON ({exc.msg})",
                         f"write one JSON object per line, like {EXAMPLE_ROW}") from None
    if not isinstance(row, dict):
        raise UsageError(f"{path}, row {number}: expected a JSON object, got {type(row).__name__}",
                         f"write one JSON object per line, like {EXAMPLE_ROW}")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        found = "missing" if "text" not in row else f"{type(text).__name__} {text!r:.40}"
        raise UsageError(f"{path}, row {number}: key 'text' is {found} (expected a non-empty string)",
                         f"stage loop trains on plain text rows, like {EXAMPLE_ROW}")
    return text


def digest(path: Path) -> str:
    """sha256 of the data file, recorded with the version so the data can be identified later."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per row, truncated to ``max_length`` and ended with EOS."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    ids = tokenizer(texts, truncation=True, max_length=max_length - len(eos))["input_ids"]
    return [row + eos for row in ids]


def batches(rows: list[list[int]], batch_size: int, pad_id: int, seed: int, start: int = 0):
    """Endless padded batches (input_ids, attention_mask, labels), reshuffled every epoch.

    The order depends only on the seed and the position, so a resumed run skips ``start``
    batches and sees exactly the batches the interrupted run would have seen.
    """
    import torch

    per_epoch = math.ceil(len(rows) / batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for position in range(offset, per_epoch):
            yield _pad([rows[i] for i in order[position * batch_size:(position + 1) * batch_size]], pad_id)
        epoch, offset = epoch + 1, 0


def _pad(rows: list[list[int]], pad_id: int) -> dict:
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention_mask[i, :len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)  # no loss on padding
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
