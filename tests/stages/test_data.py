"""Training data: every accepted format, and errors that name the file, row, key and expectation."""

from __future__ import annotations

import json

import pytest

from adaptr.errors import UsageError
from adaptr.hf import data

FORMATS = {"sft": (data.MESSAGES, data.PROMPT_COMPLETION, data.TEXT), "dpo": (data.PREFERENCE,),
           "kto": (data.UNPAIRED_PREFERENCE,), "grpo": (data.PROMPT_ONLY,)}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MESSAGES = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PREFERENCE = {"prompt": "q", "chosen": "good", "rejected": "bad"}


@pytest.mark.parametrize("row, fmt", [
    (MESSAGES, "messages"),
    ({"prompt": "q", "completion": "a"}, "prompt_completion"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]},
     "prompt_completion"),
    ({"text": "some text"}, "text"),
])
def test_sft_formats(tmp_path, row, fmt):
    loaded = data.load(_jsonl(tmp_path / "d.jsonl", [row, row]), FORMATS["sft"])
    assert loaded.format == fmt and len(loaded.rows) == 2


def test_dpo_conversational(tmp_path):
    row = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}], "extra": 1}
    loaded = data.load(_jsonl(tmp_path / "d.jsonl", [row]), FORMATS["dpo"])
    assert loaded.rows == [{k: row[k] for k in ("prompt", "chosen", "rejected")}]


def test_json_csv_parquet_and_saved_dataset(tmp_path):
    from datasets import Dataset

    rows = [PREFERENCE, {**PREFERENCE, "prompt": "q2"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).to_csv(str(tmp_path / "d.csv"), index=False)
    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.json", "d.csv", "d.parquet", "saved"):
        loaded = data.load(tmp_path / name, FORMATS["dpo"])
        assert [r["prompt"] for r in loaded.rows] == ["q", "q2"], name
        assert len(loaded.sha256) == 64


@pytest.mark.parametrize("rows, kind, expected", [
    ([PREFERENCE, {**PREFERENCE, "rejected": ""}], "dpo", "row 2: key 'rejected' is an empty string"),
    ([PREFERENCE, {"prompt": "q", "chosen": "c"}], "dpo", "row 2: key 'rejected' is missing"),
    ([PREFERENCE, {**PREFERENCE, "chosen": [{"role": "assistant", "content": "x"}]}], "dpo",
     "row 2: key 'chosen' is a list of messages"),
    ([MESSAGES, {"messages": [{"role": "robot", "content": "x"}]}], "sft", "row 2: key 'messages' has message 0 with role 'robot'"),
    ([MESSAGES, {"messages": [{"role": "user", "content": "x"}]}], "sft", "row 2: key 'messages' has no assistant"),
    ([{"completion": "a"}], "sft", "row 1 has keys ['completion']; expected messages | prompt/completion | text"),
])
def test_bad_rows_are_named(tmp_path, rows, kind, expected):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UsageError) as info:
        data.load(path, FORMATS[kind])
    assert str(path) in info.value.message and expected in info.value.message


def test_jsonl_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PREFERENCE) + "\n\n{not json\n")
    with pytest.raises(UsageError, match="line 3 is not valid JSON"):
        data.load(path, FORMATS["dpo"])


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        data.load(tmp_path / "nope.jsonl", FORMATS["sft"])
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(UsageError, match="unsupported data format"):
        data.load(tmp_path / "d.txt", FORMATS["sft"])


def test_eval_split_is_deterministic():
    rows = [{"text": str(i)} for i in range(10)]
    train, held = data.split_eval(rows, 0.2, seed=1)
    assert len(train) == 8 and len(held) == 2
    assert data.split_eval(rows, 0.2, seed=1) == (train, held)
    with pytest.raises(UsageError):
        data.split_eval(rows, 1.5, seed=1)
