"""The record fixture the TUI and Hub tests use is the record a real training run writes."""

from __future__ import annotations

import json
import os

from adaptr import records
from record_fixture import FIXTURE, shape


def test_the_record_fixture_has_the_shape_a_real_run_writes(sft_registry):
    real = records.to_dict(sft_registry.resolve("sft-v1").record)
    if os.environ.get("ADAPTR_UPDATE_FIXTURES"):
        kept = json.loads(json.dumps(real))  # this machine's paths become neutral ones
        kept["data"]["path"], kept["base"]["source"] = "data/chats.jsonl", "models/tiny-llama"
        FIXTURE.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    fixture = json.loads(FIXTURE.read_text())
    assert shape(fixture) == shape(real)
    assert fixture["format"] == records.FORMAT
    # the fields the TUI overview and the Hub card show are all there, filled in
    for path in (("data", "rows"), ("data", "sha256"), ("parameters", "trainable"), ("speed", "tokens_per_second"),
                 ("libraries", "peft"), ("base", "config_sha256")):
        value = real
        for key in path:
            value = value[key]
        assert value not in (None, "", 0), path
    assert len(real["loss_curve"]) >= 1
