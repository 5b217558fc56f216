"""A version record as a real `sft` training run writes it, for fixtures that need a record.

``tests/fixtures/sft-record.json`` is written from a real run by
``ADAPTR_UPDATE_FIXTURES=1 pytest tests/stages/test_record_fixture.py``; that test also fails
when a run's record no longer has the fixture's shape, so the TUI's and the Hub's tests cannot
drift away from what the producers write.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sft-record.json"


def trained_record(**changes) -> dict:
    """A copy of the real record, with top-level fields replaced by ``changes``."""
    record = copy.deepcopy(json.loads(FIXTURE.read_text()))
    record.update(changes)
    return record


def shape(value):
    """The nested key structure of a record: dicts by their keys, a list by its first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None
