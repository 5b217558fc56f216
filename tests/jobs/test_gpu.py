"""The main flows on CUDA: SFT, DPO continued from SFT, merge, and resume after SIGKILL.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest -m gpu` (../shared/gpu/).
QLoRA's own GPU test is tests/stages/test_qlora_gpu.py.
"""

from __future__ import annotations

import math

import pytest

from adaptr import StageRequest, jobs, run_stage

from .helpers import killed_after_checkpoint, losses
from .test_training_jobs import sft_data, sft_request  # noqa: F401  (fixture)

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_sft_dpo_merge_on_cuda(registry_with_base, sft_data, tmp_path):  # noqa: F811
    registry = registry_with_base
    sft = registry.resolve(run_stage(registry, sft_request(sft_data, max_steps=4))["output_ref"])
    memory = sft["record"]["memory"]
    assert memory["gpu_peak_allocated_bytes"] > 0
    assert memory["gpu_peak_reserved_bytes"] >= memory["gpu_peak_allocated_bytes"]

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(
        f'{{"prompt": "Q{i}?", "chosen": " yes {i}", "rejected": " no {i}"}}\n' for i in range(16)))
    dpo_run = run_stage(registry, StageRequest(stage="dpo", parent=sft["ref"], data=str(prefs),
                                               config={"max_steps": 2, "logging_steps": 1}))
    dpo = registry.resolve(dpo_run["output_ref"])
    assert dpo["record"]["first_logged"]["rewards/margins"] == 0  # reference == parent at step 0
    assert dpo["parents"][0]["relation"] == "continued"

    from adaptr import StageRequest, run_stage

    run = run_stage(registry, StageRequest(stage="merge", parent=dpo["ref"],
                                           config={"into_base": True, "dtype": "bf16"}))
    derived = registry.base(run["output_ref"])
    assert derived["parents"][0]["ref"] == dpo["ref"]


def test_resume_after_sigkill_on_cuda_matches_within_1e3(registry_with_base, sft_data, monkeypatch):  # noqa: F811
    registry = registry_with_base
    settings = {"max_steps": 20, "per_device_train_batch_size": 2}
    reference = run_stage(registry, sft_request(sft_data, save_steps=10, **settings))
    killed = killed_after_checkpoint(registry, sft_request(sft_data, save_steps=10, **settings), 10,
                                     monkeypatch)
    resumed = run_stage(registry, jobs.resume_request(registry, killed["id"]))
    assert resumed["status"] == "succeeded" and resumed["resumed_from_step"] == 10
    expected = {step: loss for step, loss in losses(registry, reference["id"]).items() if step > 10}
    got = losses(registry, resumed["id"])
    assert sorted(got) == sorted(expected) == list(range(11, 21))
    for step, loss in expected.items():  # GPU kernels need not be bit-exact across processes
        assert math.isclose(got[step], loss, rel_tol=1e-3), (step, got[step], loss)
