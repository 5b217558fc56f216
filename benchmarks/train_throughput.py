"""Training throughput: plain TRL (defaults), plain TRL (adaptr's settings), adaptr (defaults).

One run, same generated Llama-shaped model and same data of varied lengths for all three. Each
configuration trains in its own subprocess so peak memory is its own. Prints JSON.

    python benchmarks/train_throughput.py --size 1.5b --steps 30      # GPU (issue 8)
    python benchmarks/train_throughput.py --size tiny --steps 10      # CPU smoke run

tokens/s is TRL's own `num_tokens` count (non-padding tokens seen) over `train_runtime`, the
same counter for all three. MFU counts 4·N FLOPs per token (LoRA: forward 2N + backward through
activations 2N, no weight gradients for the frozen base) against 989 TFLOP/s, the H100's dense
bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "tiny": (64, 128, 2, 4, 2, None),
    "350m": (1024, 4096, 20, 16, 8, 32000),
    "1.5b": (2048, 8192, 22, 16, 8, 32000),
}
H100_BF16_FLOPS = 989e12
CONFIGS = ("trl_defaults", "trl_same_as_adaptr", "adaptr_defaults")


def make_model(out: Path, size: str) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptr.hf.tiny import make_tiny_base, make_tokenizer

    if size == "tiny":
        make_tiny_base(out)
        return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(out).parameters())
    hidden, inter, layers, heads, kv, vocab = SIZES[size]
    tokenizer = make_tokenizer()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size="2GB")
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def make_data(out: Path, rows: int, min_tokens: int, max_tokens: int) -> None:
    """Text rows of uniformly varied token lengths (the tiny tokenizer: ~1 token per word)."""
    rng = random.Random(0)
    words = ["adapter", "lora", "model", "weights", "train", "answer", "question", "the", "a", "is"]
    with open(out, "w") as fh:
        for _ in range(rows):
            n = rng.randint(min_tokens, max_tokens)
            fh.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(n))}) + "\n")


# -- workers (one configuration per process) ------------------------------------------------


def _adaptr_prepare(work: Path, model_dir: Path, data: Path, opts: dict):
    from adaptr import Registry, StageRequest
    from adaptr.bases import add_local_base
    from adaptr.stages import prepare

    registry = Registry.init(work / "registry")
    add_local_base(registry, "bench", model_dir)
    request = StageRequest(stage="sft", base="bench", data=str(data), config=opts)
    return registry, request, prepare(registry, request)


def _peak_memory() -> dict:
    import resource

    import torch

    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def _plain_trl(config_name: str, work: Path, model_dir: Path, data: Path, opts: dict) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if config_name == "trl_same_as_adaptr":
        # The exact SFTConfig adaptr builds for these options, handed to plain TRL.
        from adaptr.hf import training
        from adaptr.hf.recipe import lora_kwargs

        _, _, ctx = _adaptr_prepare(work, model_dir, data, opts)
        _, args = training._trainer_args(ctx, training.plan_of(ctx), work / "out")
        lora = LoraConfig(**lora_kwargs(ctx.config))
    else:
        cuda = torch.cuda.is_available()
        args = SFTConfig(output_dir=str(work / "out"), max_steps=opts["max_steps"],
                         per_device_train_batch_size=opts["per_device_train_batch_size"],
                         max_length=opts["max_length"], logging_steps=1, report_to=[],
                         save_strategy="no", bf16=cuda, use_cpu=not cuda, disable_tqdm=True)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if torch.cuda.is_available():
        model = model.cuda()
    trainer = SFTTrainer(model=model, args=args, peft_config=lora,
                         train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    output = trainer.train()
    tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
    return {"tokens": tokens, "train_runtime_s": output.metrics["train_runtime"],
            "gradient_checkpointing": bool(getattr(args, "gradient_checkpointing", False)
                                           or getattr(args, "activation_checkpointing", False)),
            "packing": bool(getattr(args, "packing", False))}


def _adaptr(work: Path, model_dir: Path, data: Path, opts: dict) -> dict:
    from adaptr.stages import execute

    registry, request, ctx = _adaptr_prepare(work, model_dir, data, opts)
    run = registry.create_run(stage="sft", request=request.to_dict(), config={}, status="running")
    execute(ctx, run)
    version = registry.adapters()[0]
    speed = version["record"]["speed"]
    return {"tokens": speed["tokens"], "train_runtime_s": speed["train_runtime_s"],
            "gradient_checkpointing": bool(version["config"].get("gradient_checkpointing")),
            "packing": bool(version["config"].get("packing"))}


def worker(config_name: str, work: Path, model_dir: Path, data: Path, opts: dict) -> dict:
    started = time.monotonic()
    if config_name == "adaptr_defaults":
        result = _adaptr(work, model_dir, data, opts)
    else:
        result = _plain_trl(config_name, work, model_dir, data, opts)
    result["wall_s"] = time.monotonic() - started
    result["tokens_per_second"] = result["tokens"] / result["train_runtime_s"]
    return {"config": config_name, **result, **_peak_memory()}


# -- driver --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--min-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    opts = {"max_steps": args.steps, "per_device_train_batch_size": args.batch,
            "max_length": args.max_length, "logging_steps": 1}
    if args.worker:
        work = Path(args.work)
        result = worker(args.worker, Path(tempfile.mkdtemp(dir=work)), work / "model",
                        work / "data.jsonl", opts)
        print("RESULT " + json.dumps(result), flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="adaptr-throughput-"))
    params = make_model(work / "model", args.size)
    make_data(work / "data.jsonl", args.steps * args.batch + 16, args.min_tokens, args.max_tokens)
    results = [_run_worker(name, work, args) for name in args.configs.split(",")]
    print(json.dumps(_summary(args, params, results), indent=2))


def _run_worker(name: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--size", args.size,
           "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"config": name, "error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def _summary(args, params: int, results: list[dict]) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    for result in results:
        if "tokens_per_second" in result and cuda:
            result["mfu"] = 4 * params * result["tokens_per_second"] / H100_BF16_FLOPS
    by_name = {r["config"]: r for r in results if "tokens_per_second" in r}
    ratios = {}
    if {"adaptr_defaults", "trl_same_as_adaptr"} <= by_name.keys():
        ratios["adaptr_vs_trl_same_settings"] = (by_name["adaptr_defaults"]["tokens_per_second"]
                                                 / by_name["trl_same_as_adaptr"]["tokens_per_second"])
    if {"adaptr_defaults", "trl_defaults"} <= by_name.keys():
        ratios["adaptr_vs_trl_defaults"] = (by_name["adaptr_defaults"]["tokens_per_second"]
                                            / by_name["trl_defaults"]["tokens_per_second"])
    return {"benchmark": "train_throughput", "device": torch.cuda.get_device_name() if cuda else "cpu",
            "size": args.size, "parameters": params, "steps": args.steps, "batch": args.batch,
            "max_length": args.max_length, "results": results, "ratios": ratios}


if __name__ == "__main__":
    main()
