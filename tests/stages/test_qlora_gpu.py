"""QLoRA on a real GPU (skipped without CUDA and bitsandbytes)."""

from __future__ import annotations

import pytest

from adaptr import StageRequest, run_stage

from .conftest import FAST_SFT

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_sft_then_dpo_with_4bit_base(registry_with_base, sft_data, dpo_data):
    pytest.importorskip("bitsandbytes")
    run = run_stage(registry_with_base, StageRequest(stage="sft", base="tiny", data=str(sft_data),
                                                     config=FAST_SFT, quantize="4bit"))
    version = registry_with_base.resolve(run["output_ref"])
    assert version["record"]["quantize"] == "4bit"
    assert version["record"]["memory"]["gpu_peak_allocated_bytes"] > 0
    assert version["record"]["memory"]["gpu_peak_reserved_bytes"] >= version["record"]["memory"]["gpu_peak_allocated_bytes"]
    run = run_stage(registry_with_base, StageRequest(stage="dpo", parent=version["ref"], data=str(dpo_data),
                                                     config={"max_steps": 2, "logging_steps": 1}, quantize="4bit"))
    child = registry_with_base.resolve(run["output_ref"])
    assert child["record"]["first_logged"]["rewards/margins"] == 0
