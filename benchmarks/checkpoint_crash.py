"""SIGKILL training runs at random moments while they save checkpoints; check what resume picks.

Each trial starts a detached SFT run on the tiny CPU model that saves a full checkpoint (adapter,
optimizer, scheduler, RNG, trainer state) after every step. It times the first two saves (from
the Trainer creating ``trainer/checkpoint-N`` to adaptr recording step N), then, when the next
save starts, waits a random delay of up to 1.25 save durations and SIGKILLs the run's process
group: the kill lands at a random point of a save (or just after one). Then it checks that:

- the next look marks the run ``interrupted``;
- the checkpoint the ``resume`` stage picks verifies against its manifest (and so does every
  recorded checkpoint);
- ``adaptr gc`` removes every partial directory: staging directories, unsealed trainer
  ``checkpoint-N`` directories, and placed but unrecorded ``checkpoints/step-N`` directories.

Prints one JSON object (``--out FILE`` also writes it). Usage::

    python benchmarks/checkpoint_crash.py --trials 20 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

SFT_CONFIG = {"max_steps": 40, "per_device_train_batch_size": 2, "r": 4, "lora_alpha": 8,
              "max_length": 48, "logging_steps": 1}


def make_registry(directory: Path):
    from adaptr import Registry
    from adaptr.bases import add_local_base
    from adaptr.hf.tiny import make_tiny_base

    registry = Registry.init(directory / "registry")
    add_local_base(registry, "tiny", make_tiny_base(directory / "tiny"))
    data = directory / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?", "completion": f" {2 * i}."}) + "\n"
                            for i in range(64)))
    return registry, data


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


def trial(registry, data: Path, rng: random.Random) -> dict:
    """One detached run, killed at a random moment inside one of its checkpoint saves."""
    from adaptr import StageRequest, jobs

    run = jobs.submit(registry, StageRequest(stage="sft", base="tiny", data=str(data),
                                             config=SFT_CONFIG, save_steps=1))
    run_id = run["id"]
    # A save runs from the Trainer creating trainer/checkpoint-N to adaptr recording step N.
    window = max(_save_duration(registry, run, step) for step in (1, 2))
    target = _next_save_start(registry, run, 3)
    delay = rng.uniform(0, 1.25 * window)
    time.sleep(delay)
    os.killpg(run["pid"], signal.SIGKILL)
    _wait(lambda: registry.run(run_id)["status"] == "interrupted" or jobs.refresh(registry), 30,
          "interrupted")
    found = _partials(registry, registry.run(run_id))
    outcome = {"run": run_id, "killed_in_save_of_step": target, "delay_s": round(delay, 4),
               "save_window_s": round(window, 4), "status": registry.run(run_id)["status"],
               "left_over": found, **_resume_pick(registry, run_id)}
    from adaptr.maintenance import collect_garbage

    outcome["gc_removed"] = len(collect_garbage(registry))
    outcome["left_after_gc"] = _partials(registry, registry.run(run_id))
    outcome["ok"] = (outcome["status"] == "interrupted" and outcome["picked_verifies"]
                     and outcome["all_recorded_verify"] and not any(outcome["left_after_gc"].values()))
    return outcome


def _recorded(registry, run: dict, step: int) -> bool:
    from adaptr import jobs

    if registry.run(run["id"])["status"] not in jobs.ACTIVE:
        raise RuntimeError(f"run ended before the kill:\n{''.join(jobs.tail(run, 30))}")
    return any(c["step"] == step for c in registry.checkpoints(run["id"]))


def _save_duration(registry, run: dict, step: int) -> float:
    _next_save_start(registry, run, step, exact=True)
    started = time.monotonic()
    _wait(lambda: _recorded(registry, run, step), 120, f"checkpoint {step} recorded")
    return time.monotonic() - started


def _next_save_start(registry, run: dict, step: int, exact: bool = False) -> int:
    """Block until the Trainer starts saving ``step`` (or a later step, unless ``exact``)."""
    trainer_dir = Path(run["run_dir"]) / "trainer"
    deadline = time.monotonic() + 300
    polls = 0
    while time.monotonic() < deadline:
        if (trainer_dir / f"checkpoint-{step}").exists():
            return step
        polls += 1
        if polls % 200 == 0 and _recorded(registry, run, step):  # missed it: saved too fast
            if exact:
                return step
            step += 1
        time.sleep(0.0005)
    raise TimeoutError(f"timed out waiting for the save of step {step}")


def _partials(registry, run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    recorded = {Path(c["path"]).name for c in registry.checkpoints(run["id"])}
    placed = sorted((run_dir / "checkpoints").glob("step-*"))
    return {
        "staging": sorted(p.name for p in registry.store.tmp.iterdir()) if registry.store.tmp.is_dir() else [],
        "unsealed_trainer": sorted(p.name for p in (run_dir / "trainer").glob("checkpoint-*")),
        "unrecorded_steps": [p.name for p in placed if p.name not in recorded],
    }


def _resume_pick(registry, run_id: str) -> dict:
    from adaptr import AdaptrError, jobs, stages, store

    all_verify = True
    for checkpoint in registry.checkpoints(run_id):
        try:
            store.verify(Path(checkpoint["path"]), checkpoint["sha256"])
        except AdaptrError:
            all_verify = False
    try:
        ctx = stages.prepare(registry, jobs.resume_request(registry, run_id))
    except AdaptrError as exc:
        return {"picked_step": None, "picked_verifies": False, "all_recorded_verify": all_verify,
                "error": str(exc)}
    picked = ctx.resume_from
    try:
        store.verify(Path(picked["path"]), picked["sha256"])
        verifies = True
    except AdaptrError:
        verifies = False
    return {"picked_step": picked["step"], "picked_verifies": verifies,
            "all_recorded_verify": all_verify, "skipped": picked["skipped"]}


def run_trials(trials: int, seed: int = 0, directory: Path | None = None) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="adaptr-crash-") as tmp:
        registry, data = make_registry(Path(directory or tmp))
        started = time.monotonic()
        outcomes = [trial(registry, data, rng) for _ in range(trials)]
        registry.close()
    mid_save = sum(1 for o in outcomes if any(o["left_over"].values()))  # left partial files
    return {
        "benchmark": "checkpoint_crash",
        "trials": trials,
        "seed": seed,
        "all_ok": all(o["ok"] for o in outcomes),
        "picked_verifies": sum(o["picked_verifies"] for o in outcomes),
        "killed_mid_save": mid_save,
        "left_unsealed_trainer_dir": sum(bool(o["left_over"]["unsealed_trainer"]) for o in outcomes),
        "left_staging_dir": sum(bool(o["left_over"]["staging"]) for o in outcomes),
        "left_unrecorded_step_dir": sum(bool(o["left_over"]["unrecorded_steps"]) for o in outcomes),
        "cleaned_by_gc": sum(o["gc_removed"] > 0 for o in outcomes),
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": outcomes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build the registry (default: a temporary directory)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run_trials(args.trials, args.seed, args.workdir)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
