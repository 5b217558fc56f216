"""A test-only stage `testloop`: a tiny plain-Python training loop that checkpoints and resumes.

Loaded through ``ADAPTR_EXTRA_PLUGINS=adaptr_testloop`` (with this directory on PYTHONPATH), so
detached runs see it too. Its checkpoints have the layout of a transformers Trainer checkpoint
(``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``), which is what
``adaptr resume`` requires.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from adaptr import Stage, UsageError, hookimpl


@dataclass
class LoopConfig:
    steps: int = field(default=20, metadata={"help": "optimizer steps"})
    save_steps: int = field(default=5, metadata={"help": "checkpoint every N steps"})
    sleep: float = field(default=0.0, metadata={"help": "seconds to sleep after each step"})
    lr: float = field(default=0.01, metadata={"help": "learning rate"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    fail_at: int = field(default=0, metadata={"help": "raise at this step (0: never)"})


def _check(ctx):
    lines = Path(ctx.request.data).read_text().split() if Path(ctx.request.data).is_file() else []
    try:
        [float(x) for x in lines]
    except ValueError:
        raise UsageError(f"{ctx.request.data}: not a list of numbers", "write one number per line") from None
    if not lines:
        raise UsageError(f"{ctx.request.data}: no numbers", "write one number per line")


class _Model:
    """y = w.x + b trained by SGD with momentum on a decaying learning rate: all plain floats."""

    def __init__(self, lr: float, seed: int):
        self.rng = random.Random(seed)
        self.weights = [self.rng.uniform(-1, 1) for _ in range(5)]
        self.velocity = [0.0] * 5
        self.lr, self.scheduled_steps = lr, 0

    def step(self, scale: float) -> float:
        x = [self.rng.gauss(0, 1) * scale for _ in range(4)] + [1.0]
        error = sum(w * xi for w, xi in zip(self.weights, x)) - 1.0
        lr = self.lr / (1.0 + 0.1 * self.scheduled_steps)
        for i, xi in enumerate(x):
            self.velocity[i] = 0.9 * self.velocity[i] + 2 * error * xi
            self.weights[i] -= lr * self.velocity[i]
        self.scheduled_steps += 1
        return error * error

    def save(self, directory: Path, step: int) -> None:
        _dump(directory / "model.pt", self.weights)
        _dump(directory / "optimizer.pt", self.velocity)
        _dump(directory / "scheduler.pt", self.scheduled_steps)
        _dump(directory / "rng_state.pth", self.rng.getstate())
        (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    def load(self, directory: Path) -> int:
        self.weights = _load(directory / "model.pt")
        self.velocity = _load(directory / "optimizer.pt")
        self.scheduled_steps = _load(directory / "scheduler.pt")
        self.rng.setstate(_load(directory / "rng_state.pth"))
        return json.loads((directory / "trainer_state.json").read_text())["global_step"]


def _dump(path: Path, value) -> None:
    path.write_bytes(pickle.dumps(value))


def _load(path: Path):
    return pickle.loads(path.read_bytes())


def _run(ctx):
    cfg = ctx.config
    model = _Model(cfg.lr, cfg.seed)
    data = [float(x) for x in Path(ctx.request.data).read_text().split()]
    start = model.load(Path(ctx.resume_from["path"])) if ctx.resume_from else 0
    ctx.reporter.start(cfg.steps, "testloop")
    ctx.reporter.message(f"devices: {os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}")
    loss = None
    for step in range(start + 1, cfg.steps + 1):
        if step == cfg.fail_at:
            raise RuntimeError(f"failing at step {step} as configured")
        loss = model.step(data[step % len(data)])
        ctx.progress(step, cfg.steps, {"loss": loss})
        if cfg.sleep:
            time.sleep(cfg.sleep)
        stopping = ctx.should_stop()
        if step % cfg.save_steps == 0 or stopping:
            with ctx.staging("checkpoint") as staged:
                model.save(staged, step)
                ctx.save_checkpoint(step, staged)
        if stopping:
            return
    with ctx.staging("adapter") as staged:
        _dump(staged / "model.pt", model.weights)
        (staged / "adapter_config.json").write_text(json.dumps({"kind": "testloop"}))
        ctx.publish_adapter(staged, record={"steps": cfg.steps}, metrics={"loss": loss})


@hookimpl
def register_stages(register):
    register(Stage("testloop", LoopConfig, run=_run, check=_check, inputs="base",
                   help="test-only plain PyTorch loop"))
