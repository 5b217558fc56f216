"""adaptr's sft/dpo/grpo/kto stages vs the same TRL script with the same config: wall time and tokens/s.

Each measurement runs in its own fresh subprocess, adaptr and TRL alternating, so neither side
profits from warm caches. Both train the same generated Llama-shaped model on the same data with
the same LoRA and Trainer settings; DPO, GRPO and KTO continue the SFT adapter in both (the TRL
side loads it with PeftModel.from_pretrained(is_trainable=True), which is what adaptr does).
GRPO scores its generations with one reward function from a file (adaptr: ``--reward
FILE:letters``; TRL: the same function passed as ``reward_funcs``).

- ``wall_s``: from before the model loads to the saved adapter (adaptr also validates the data,
  records the run, fingerprints the base weights, checks the saved tensors and publishes).
- ``cpu_s``: the process's CPU time over the same span; on a shared machine it is steadier than
  wall time (with one thread, it is the work done).
- ``train_s`` / ``tokens_per_s``: the Trainer's own train_runtime and TRL's logged num_tokens.
- ``outside_train_s``: wall minus train time (loading, preparing, checking, saving).

    python benchmarks/train_vs_trl.py [--hidden 256] [--layers 4] [--steps 30] [--repeats 3]
                                      [--threads 1] [--kinds sft,dpo,grpo,kto] [--json-out F]

Not run in CI; results are summarised in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The settings both sides use, under TRL's own key names.
SETTINGS = {"per_device_train_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 5,
            "max_length": 128, "seed": 42, "lr_scheduler_type": "linear", "warmup_steps": 0,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "optim": "adamw_torch", "bf16": False,
            "gradient_accumulation_steps": 1, "num_train_epochs": 1.0}
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "use_rslora": False, "use_dora": False,
        "bias": "none", "modules_to_save": None}
# GRPO: a handful of sampled completions per prompt; GRPOConfig has no max_length.
GRPO = {"num_generations": 4, "max_completion_length": 16}
KINDS = ("sft", "dpo", "grpo", "kto")
REWARD = "def letters(completions, **kwargs):\n    return [sum(ch.isalpha() for ch in c[0]['content']) / 10.0 for c in completions]\n"


def _stage_settings(kind: str) -> dict:
    settings = dict(SETTINGS)
    if kind == "grpo":
        settings.pop("max_length")
        settings.update(GRPO)
    return settings


def _data(kind: str) -> str:
    from adaptr.demo import PREFERENCE_DATA, PROMPTS_DATA, SFT_DATA, UNPAIRED_DATA, data_file

    name = {"sft": SFT_DATA, "dpo": PREFERENCE_DATA, "grpo": PROMPTS_DATA, "kto": UNPAIRED_DATA}[kind]
    return str(data_file(name))


def _reward_file(work: Path) -> Path:
    path = work / "bench_rewards.py"
    if not path.exists():
        path.write_text(REWARD)
    return path


# -- the two sides, each run in a child process ------------------------------------------------


def child_adaptr(kind: str, work: Path, steps: int) -> dict:
    # The same imports as the TRL side, before the clock starts (adaptr imports them lazily).
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401

    from adaptr import Registry, StageRequest, plugins, run_stage

    registry = Registry(work / "registry" / "adaptr.db")
    config = {**_stage_settings(kind), **LORA, "max_steps": steps}
    if kind == "sft":
        request = StageRequest(stage="sft", base="bench", data=_data(kind), config=config)
    else:
        config = {k: v for k, v in config.items() if k not in LORA}
        if kind == "grpo":
            config["reward"] = [f"{_reward_file(work)}:letters"]
        request = StageRequest(stage=kind, parent="sft-v1", data=_data(kind), config=config)
    plugins.load_plugins()
    started, cpu = time.perf_counter(), time.process_time()
    run = run_stage(registry, request)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    speed = registry.resolve(run["output_ref"])["record"]["speed"]
    return {"wall_s": wall, "cpu_s": cpu, "train_s": speed["train_runtime_s"], "tokens": speed["tokens"]}


def child_trl(kind: str, work: Path, steps: int) -> dict:
    import importlib.util

    import torch
    from datasets import load_dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    base_dir = str(work / "base")
    args = dict(_stage_settings(kind), max_steps=steps, output_dir=str(work / f"trl-{kind}"), report_to=[],
                disable_tqdm=True, save_strategy="no", use_cpu=not torch.cuda.is_available(),
                activation_checkpointing=False, logging_first_step=True)
    started, cpu = time.perf_counter(), time.process_time()
    set_seed(SETTINGS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    data = load_dataset("json", data_files=_data(kind), split="train")
    if kind == "sft":
        model = get_peft_model(model, LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer = SFTTrainer(model=model, args=SFTConfig(**args), train_dataset=data, processing_class=tokenizer)
    else:
        sft_dir = sorted((work / "registry" / "adapters" / "sft").iterdir())[0]
        model = PeftModel.from_pretrained(model, str(sft_dir), is_trainable=True)
        if kind == "dpo":
            trainer = DPOTrainer(model=model, args=DPOConfig(**args), train_dataset=data, processing_class=tokenizer)
        elif kind == "kto":
            trainer = KTOTrainer(model=model, args=KTOConfig(**args), train_dataset=data, processing_class=tokenizer)
        else:
            spec = importlib.util.spec_from_file_location("bench_rewards", _reward_file(work))
            rewards = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(rewards)
            trainer = GRPOTrainer(model=model, reward_funcs=[rewards.letters], args=GRPOConfig(**args),
                                  train_dataset=data, processing_class=tokenizer)
    output = trainer.train()
    model.save_pretrained(str(work / f"trl-{kind}-adapter"))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = [log["num_tokens"] for log in trainer.state.log_history if "num_tokens" in log][-1]
    return {"wall_s": wall, "cpu_s": cpu, "train_s": output.metrics["train_runtime"], "tokens": tokens}


def child_main(side: str, kind: str, work: str, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    fn = child_adaptr if side == "adaptr" else child_trl
    print("RESULT " + json.dumps(fn(kind, Path(work), steps)))


# -- the parent: set up once, alternate the sides, summarise --------------------------------------


def setup(work: Path, hidden: int, layers: int, steps: int, threads: int) -> None:
    from adaptr import Registry
    from adaptr.bases import add_local_base
    from adaptr.hf.tiny import make_tiny_base

    make_tiny_base(work / "base", hidden_size=hidden, num_layers=layers)
    registry = Registry.init(work / "registry")
    add_local_base(registry, "bench", work / "base")
    registry.close()
    measure("adaptr", "sft", work, steps, threads)  # sft-v1: the parent both DPO/GRPO/KTO sides continue


def measure(side: str, kind: str, work: Path, steps: int, threads: int) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import train_vs_trl as b; "
            f"b.child_main({side!r}, {kind!r}, {str(work)!r}, {steps}, {threads})")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{side} {kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["tokens_per_s"] = result["tokens"] / result["train_s"]
    result["outside_train_s"] = result["wall_s"] - result["train_s"]  # loading, checks, saving
    return result


def summarise(samples: dict) -> dict:
    out = {}
    for kind in samples["adaptr"]:
        med = {side: {key: statistics.median(s[key] for s in samples[side][kind])
                      for key in ("wall_s", "cpu_s", "train_s", "tokens_per_s", "outside_train_s")}
               for side in ("adaptr", "trl")}
        out[kind] = {**med,
                     "wall_ratio_adaptr_over_trl": med["adaptr"]["wall_s"] / med["trl"]["wall_s"],
                     "cpu_ratio_adaptr_over_trl": med["adaptr"]["cpu_s"] / med["trl"]["cpu_s"],
                     "tokens_per_s_ratio_adaptr_over_trl": med["adaptr"]["tokens_per_s"] / med["trl"]["tokens_per_s"],
                     "samples": {side: samples[side][kind] for side in ("adaptr", "trl")}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help="stages to measure, comma-separated")
    parser.add_argument("--json-out")
    opts = parser.parse_args()
    import torch

    kinds = [k for k in opts.kinds.split(",") if k]
    samples = {side: {kind: [] for kind in kinds} for side in ("adaptr", "trl")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup(work, opts.hidden, opts.layers, opts.steps, opts.threads)
        for repeat in range(opts.repeats):
            order = ("adaptr", "trl") if repeat % 2 == 0 else ("trl", "adaptr")
            for kind in kinds:
                for side in order:
                    samples[side][kind].append(measure(side, kind, work, opts.steps, opts.threads))
    import platform

    import peft
    import transformers
    import trl

    result = {
        "benchmark": "train_vs_trl",
        "settings": {"hidden": opts.hidden, "layers": opts.layers, "steps": opts.steps,
                     "repeats": opts.repeats, "threads": opts.threads, **SETTINGS, **LORA, "grpo": GRPO},
        "machine": {"cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available(),
                    "platform": platform.platform(), "load_avg_1m_at_end": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "trl": trl.__version__},
        "results": summarise(samples),
    }
    text = json.dumps(result, indent=1)
    if opts.json_out:
        Path(opts.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
