"""Training data: load local files, validate every row before any model loads, digest them.

Accepted: JSONL, JSON (a list of objects), Parquet, CSV, or a directory saved with
``datasets.Dataset.save_to_disk``. A stage names the formats it takes, from TRL's dataset
formats (huggingface.co/docs/trl/dataset_formats), each plain or conversational:

- language modeling: ``text``, or ``messages`` (with an assistant message)
- prompt-completion: ``prompt``/``completion``
- preference: ``prompt``/``chosen``/``rejected``
- unpaired preference: ``prompt``/``completion``/``label`` (a boolean)
- prompt-only: ``prompt`` (other columns are kept: reward functions read them)

Errors name the file, the row (1-based; the line number for JSONL), the key and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import decode_utf8
from ..errors import UsageError
from ..store import sha256_file

_ROLES = ("system", "user", "assistant", "tool", "developer")
_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class LoadedData:
    """Validated rows of one file plus what the registry records about it."""

    path: Path
    rows: list[dict]
    format: str
    sha256: str
    row_numbers: list[int] = field(default_factory=list)
    data_format: "DataFormat | None" = None

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "rows": len(self.rows),
                "format": self.format}


# -- reading ---------------------------------------------------------------------------------


def read_rows(path: str | Path) -> tuple[list[dict], list[int]]:
    """Rows of a data file as dicts, with the number a user would look up for each row."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"data file {path} not found", "check the path given to --data / --eval-data")
    if path.is_dir():
        return _read_saved_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".parquet", ".csv"):
        return _read_tabular(path, suffix)
    raise UsageError(f"{path}: unsupported data format {suffix or '(no suffix)'!r}",
                     f"use one of {', '.join(_SUFFIXES)} or a saved `datasets` directory")


def _read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    rows, numbers = [], []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = decode_utf8(raw, path, number)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {number} is not valid JSON ({exc.msg})",
                                 "each line must hold one JSON object") from None
            rows.append(_object(row, path, number))
            numbers.append(number)
    return rows, numbers


def _read_json(path: Path) -> tuple[list[dict], list[int]]:
    text = decode_utf8(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            return _read_jsonl(path)  # JSON Lines saved with a .json suffix
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})",
                         "a .json file holds a list of objects") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of objects, got {type(data).__name__}",
                         "write [{...}, {...}] or use JSON Lines (.jsonl)")
    rows = [_object(row, path, i) for i, row in enumerate(data, start=1)]
    return rows, list(range(1, len(rows) + 1))


def _read_tabular(path: Path, suffix: str) -> tuple[list[dict], list[int]]:
    from datasets import Dataset

    loader = Dataset.from_parquet if suffix == ".parquet" else Dataset.from_csv
    try:
        rows = loader(str(path), keep_in_memory=True).to_list()
    except Exception as exc:  # pyarrow/pandas raise many kinds on a bad file
        raise UsageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})",
                         "check the file's format") from None
    return rows, list(range(1, len(rows) + 1))


def _read_saved_dataset(path: Path) -> tuple[list[dict], list[int]]:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path), keep_in_memory=True)
    except Exception as exc:
        raise UsageError(f"{path}: not a saved `datasets` directory ({exc})",
                         "pass a file, or a directory written by Dataset.save_to_disk") from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise UsageError(f"{path}: a DatasetDict without a 'train' split ({', '.join(data)})",
                             "save the split you want to train on on its own")
        data = data["train"]
    rows = data.to_list()
    return rows, list(range(1, len(rows) + 1))


def _object(row, path: Path, number: int) -> dict:
    if not isinstance(row, dict):
        raise UsageError(f"{path}: row {number} is a {type(row).__name__}, expected a JSON object",
                         "each row is an object such as {\"prompt\": ..., \"completion\": ...}")
    return row


# -- validating ------------------------------------------------------------------------------


def _fail(path: Path, number: int, key: str, problem: str, expected: str) -> UsageError:
    return UsageError(f"{path}: row {number}: key {key!r} {problem}; expected {expected}",
                      "fix the row or remove it; see docs/stages.md for the accepted formats")


def _check_messages(value, path, number, key, *, roles=_ROLES) -> None:
    expected = "a non-empty list of {\"role\": ..., \"content\": \"...\"} messages"
    if not isinstance(value, list) or not value:
        raise _fail(path, number, key, f"is {_kind(value)}", expected)
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _fail(path, number, key, f"has message {i} as {_kind(message)}", expected)
        role, content = message.get("role"), message.get("content")
        if role not in roles:
            raise _fail(path, number, key, f"has message {i} with role {role!r}",
                        f"a role among {', '.join(roles)}")
        if not isinstance(content, str):
            raise _fail(path, number, key, f"has message {i} with content {_kind(content)}",
                        "the content to be a string")


def _check_text(value, path, number, key) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, number, key, f"is {_kind(value)}", "a non-empty string")


def _kind(value) -> str:
    if value is None:
        return "missing or null"
    if isinstance(value, str) and not value.strip():
        return "an empty string"
    if isinstance(value, list) and not value:
        return "an empty list"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


@dataclass(frozen=True)
class DataFormat:
    """One of TRL's dataset formats: the keys of a row, and how its text is checked and encoded.

    A row holds either one ``whole`` example (``text`` or ``messages``), or a ``prompt`` followed
    by ``completions`` (each the prompt's continuation: ``completion``, ``chosen``, ``rejected``),
    all plain strings or all conversations. ``check_row`` adds a rule of the format's own.
    """

    name: str
    keys: tuple[str, ...]
    whole: str | None = None
    prompt: str | None = None
    completions: tuple[str, ...] = ()
    needs_assistant: bool = False
    keep_extra: bool = False
    check_row: Callable[[dict, Path, int], None] | None = None

    def validate(self, row: dict, path: Path, number: int) -> None:
        for key in self.keys:
            if key not in row:
                raise _fail(path, number, key, "is missing", "the same keys in every row")
        if self.whole:
            _check_whole(row[self.whole], path, number, self.whole, self.needs_assistant)
        if self.prompt:
            _check_pair(row, path, number, (self.prompt, *self.completions))
        if self.check_row:
            self.check_row(row, path, number)

    def project(self, row: dict) -> dict:
        """The row as the trainer gets it: extra columns would confuse it, unless kept."""
        return dict(row) if self.keep_extra else {k: row[k] for k in self.keys}


def _check_whole(value, path, number, key, needs_assistant: bool) -> None:
    if not isinstance(value, list):
        _check_text(value, path, number, key)
        return
    _check_messages(value, path, number, key)
    if needs_assistant and not any(m.get("role") == "assistant" for m in value):
        raise _fail(path, number, key, "has no assistant message", "at least one message with role 'assistant'")


def _check_label(row: dict, path: Path, number: int) -> None:
    if not isinstance(row["label"], bool):
        raise _fail(path, number, "label", f"is {_kind(row['label'])}",
                    "true (the completion is desirable) or false")


TEXT = DataFormat("text", ("text",), whole="text")
MESSAGES = DataFormat("messages", ("messages",), whole="messages", needs_assistant=True)
PROMPT_COMPLETION = DataFormat("prompt_completion", ("prompt", "completion"), prompt="prompt",
                               completions=("completion",))
PREFERENCE = DataFormat("preference", ("prompt", "chosen", "rejected"), prompt="prompt",
                        completions=("chosen", "rejected"))
UNPAIRED_PREFERENCE = DataFormat("unpaired_preference", ("prompt", "completion", "label"), prompt="prompt",
                                 completions=("completion",), check_row=_check_label)
PROMPT_ONLY = DataFormat("prompt_only", ("prompt",), prompt="prompt", keep_extra=True)


def _detect(rows: list[dict], numbers: list[int], path: Path, formats) -> DataFormat:
    if not rows:
        raise UsageError(f"{path} holds no rows", "add training examples to the file")
    first = rows[0]
    for fmt in formats:
        if all(k in first for k in fmt.keys):
            return fmt
    wanted = " | ".join("/".join(fmt.keys) for fmt in formats)
    raise UsageError(f"{path}: row {numbers[0]} has keys {sorted(first)}; expected {wanted}",
                     "rename the columns to TRL's names; see docs/stages.md")


def _check_pair(row, path, number, keys) -> None:
    """Fields that are all strings, or all conversations (the prompt may be a conversation)."""
    conversational = isinstance(row.get(keys[0]), list)
    for key in keys:
        if conversational:
            _check_messages(row[key], path, number, key)
        elif isinstance(row[key], list):
            raise _fail(path, number, key, "is a list of messages while "
                        f"{keys[0]!r} is a string", "all strings or all conversations")
        else:
            _check_text(row[key], path, number, key)


def load(path: str | Path, formats) -> LoadedData:
    """Read ``path`` and validate every row against the first of ``formats`` its first row fits."""
    path = Path(path).expanduser().resolve()
    rows, numbers = read_rows(path)
    fmt = _detect(rows, numbers, path, formats)
    for row, number in zip(rows, numbers):
        fmt.validate(row, path, number)
    return LoadedData(path=path, rows=[fmt.project(row) for row in rows], format=fmt.name,
                      sha256=digest(path), row_numbers=numbers, data_format=fmt)


def digest(path: Path) -> str:
    """sha256 of a data file, or of a directory's files (names and contents)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    combined = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        combined.update(file.relative_to(path).as_posix().encode() + b"\0")
        combined.update(sha256_file(file).encode())
    return combined.hexdigest()


def split_eval(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out ``fraction`` of the rows (at least one), chosen by ``seed``."""
    if not 0 < fraction < 1:
        raise UsageError(f"--eval-fraction {fraction} is outside (0, 1)", "use e.g. --eval-fraction 0.1")
    if len(rows) < 2:
        raise UsageError("too few rows to hold some out for evaluation", "pass --eval-data instead")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = max(1, int(round(len(rows) * fraction)))
    held = set(order[:count])
    train = [row for i, row in enumerate(rows) if i not in held]
    return train, [rows[i] for i in sorted(held)]


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)
