"""`adaptr eval`'s held-out loss vs a plain transformers loop computing the same loss on the same batches.

One process, one model, one set of batches (those the loss evaluator builds with TRL's SFT
preparation and collator). The two loops alternate ``--repeats`` times:

- adaptr: ``adaptr_eval.loss.summed_nll``, what ``adaptr eval --evaluator loss`` runs per version
  (the backbone once, the LM head only at labelled positions);
- transformers: ``model(input_ids, attention_mask, labels=labels)`` and ``loss * n_labelled``, the
  loop a user would write, under ``torch.inference_mode`` too.

Both must give the same summed negative log-likelihood (checked, relative 1e-4). ``tokens_per_s``
counts labelled (scored) tokens per second of the loop. The whole `adaptr eval` (planning, data
preparation, model load, recording) is timed once as ``end_to_end_s``. The model is Llama-shaped
with a 32k vocabulary (the tiny tokenizer uses its first 512 ids), so the LM head weighs what it
does in real models.

    python benchmarks/eval_vs_transformers.py [--hidden 256] [--layers 2] [--vocab 32000]
                                              [--rows 96] [--batch 8] [--repeats 5] [--threads 2]
                                              [--json-out F]

Not run in CI; results are summarised in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_model(directory: Path, hidden: int, layers: int, vocab: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptr.hf.tiny import make_tokenizer

    tokenizer = make_tokenizer()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def make_adapter(base_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)  # a non-zero update, as after training
    model.save_pretrained(out)
    return out


def make_data(path: Path, rows: int) -> Path:
    import random

    rng = random.Random(0)
    words = "the adapter base model answer question lineage version train data token".split()
    with open(path, "w") as fh:
        for _ in range(rows):
            question = " ".join(rng.choice(words) for _ in range(rng.randint(4, 40)))
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(8, 60)))
            fh.write(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    return path


def plain_transformers(model, batches: list[dict]) -> tuple[float, int]:
    import torch

    total, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"])
            count = int((batch["labels"][:, 1:] != -100).sum())
            total += out.loss.double().item() * count
            tokens += count
    return total, tokens


class Silent:
    """A reporter that prints nothing (the default one logs every batch)."""

    def start(self, total, description): pass
    def update(self, step, metrics): pass
    def message(self, text): pass
    def finish(self): pass


def timed(fn, *args) -> tuple[float, tuple]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from adaptr import Registry, evals, load
    from adaptr.bases import add_local_base
    from adaptr.peftdir import import_adapter
    from adaptr_eval import common, loss

    work = Path(tempfile.mkdtemp(prefix="adaptr-eval-bench-"))
    base_dir = make_model(work / "base", args.hidden, args.layers, args.vocab)
    registry = Registry.init(work / "registry")
    add_local_base(registry, "bench", base_dir)
    import_adapter(registry, make_adapter(base_dir, work / "lora"), base="bench", name="bench")
    data = make_data(work / "heldout.jsonl", args.rows)
    settings = {"batch_size": str(args.batch), "max_length": "512"}

    started = time.perf_counter()
    job = evals.plan(registry, ["bench-v1"], data, evaluator="loss", settings=settings, reporter=Silent())
    (result,) = evals.execute(job)
    end_to_end = time.perf_counter() - started

    common.quiet()
    batches = loss.prepare(job, common.tokenizer(job))
    scored = common.load_model(job, job.targets[0].node)
    plain = load("bench-v1", registry=registry)
    adaptr_s, transformers_s, sums = [], [], set()
    for _ in range(args.repeats):  # alternating, so both see the same machine load
        seconds, (nll, tokens) = timed(loss.summed_nll, scored, batches)
        adaptr_s.append(seconds)
        seconds, (plain_nll, plain_tokens) = timed(plain_transformers, plain, batches)
        transformers_s.append(seconds)
        assert tokens == plain_tokens, (tokens, plain_tokens)
        assert abs(nll - plain_nll) <= 1e-4 * abs(plain_nll), (nll, plain_nll)
        sums.add(round(nll, 3))
    adaptr_median, transformers_median = statistics.median(adaptr_s), statistics.median(transformers_s)
    out = {
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab,
                  "parameters": sum(p.numel() for p in plain.parameters())},
        "rows": args.rows, "batch_size": args.batch, "batches": len(batches), "scored_tokens": tokens,
        "padded_positions": sum(int(b["input_ids"].numel()) for b in batches),
        "loss": nll / tokens, "recorded_loss": result["metrics"]["loss"], "same_loss": True,
        "adaptr_s": [round(s, 4) for s in adaptr_s], "transformers_s": [round(s, 4) for s in transformers_s],
        "adaptr_tokens_per_s": round(tokens / adaptr_median, 1),
        "transformers_tokens_per_s": round(tokens / transformers_median, 1),
        "ratio": round(transformers_median / adaptr_median, 3),
        "end_to_end_s": round(end_to_end, 3), "threads": args.threads,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "device": common.device(), "torch": torch.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
