"""A TrainerCallback that feeds the registry: progress, the loss curve, checkpoints, stop requests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from ..store import CONFIG_FILE
from .loading import TRAINED

_SKIPPED_LOG_KEYS = {"epoch", "total_flos", "train_runtime", "train_samples_per_second",
                     "train_steps_per_second", "train_loss"}


class FingerprintCallback(TrainerCallback):
    """Fingerprints the base as the training loop starts (after any move to the device)."""

    def __init__(self, owned: frozenset[str]):
        self.owned, self.begin = owned, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from .checks import base_fingerprint

        self.begin = base_fingerprint(model, self.owned)


class RegistryCallback(TrainerCallback):
    """Reports each step, records logged metrics, moves checkpoints into the store, obeys cancel."""

    def __init__(self, ctx, keep_checkpoints: int | None = None):
        self.ctx = ctx
        self.keep_checkpoints = keep_checkpoints
        self.last_logs: dict = {}
        self.first_logs: dict | None = None
        self.num_tokens = 0.0
        self.peak_rss = 0
        self.stopped_at: int | None = None
        self._process = None

    # -- progress and metrics ------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.ctx.reporter.start(state.max_steps, f"{self.ctx.stage.name} training")
        self._sample_memory()

    def on_step_end(self, args, state, control, **kwargs):
        if _on_any_rank(self.ctx.should_stop()):
            self.ctx.request_stop()
            control.should_save = True  # a cancelled run keeps its latest state, to resume from
            control.should_training_stop = True
            self.stopped_at = state.global_step
        if state.is_world_process_zero:
            self.ctx.progress(state.global_step, state.max_steps)
        self._sample_memory()

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and k not in _SKIPPED_LOG_KEYS}
        if "num_tokens" in numeric:
            self.num_tokens = numeric["num_tokens"]
        if not numeric or not state.is_world_process_zero:
            return
        if self.first_logs is None and "loss" in numeric:
            self.first_logs = dict(numeric)
        self.last_logs.update(numeric)
        self.ctx.progress(state.global_step, state.max_steps, metrics=numeric)

    def _sample_memory(self) -> None:
        import psutil

        if self._process is None:
            self._process = psutil.Process()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    # -- checkpoints ---------------------------------------------------------------------

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every rank has written its part (rng_state_<rank>.pth) before rank 0 seals
        if not args.should_save:  # only the main process writes
            return
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not staged.is_dir():
            return
        strip_extra_adapters(staged)
        started = time.monotonic()
        best = state.best_model_checkpoint  # tracked by the Trainer when metric_for_best_model is set
        self.ctx.save_checkpoint(state.global_step, staged, keep_last=self.keep_checkpoints,
                                 keep_step=int(best.rsplit("-", 1)[1]) if best else None)
        self.ctx.reporter.message(
            f"checkpoint at step {state.global_step} ({time.monotonic() - started:.1f}s to seal)")


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _on_any_rank(flag: bool) -> bool:
    """True on every rank when any rank says so: ranks that stopped at different steps would
    wait for each other forever in the next collective."""
    if not _distributed():
        return flag
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def strip_extra_adapters(directory: Path) -> None:
    """Remove adapters other than the trained one (``ref/``, frozen stacked parents) from a save.

    They are copies of registered versions; the trained adapter sits at the top level.
    """
    for child in Path(directory).iterdir():
        if child.is_dir() and child.name != TRAINED and (child / CONFIG_FILE).exists():
            shutil.rmtree(child)
