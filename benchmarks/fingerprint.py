"""Cost of one base-fingerprint pass on a generated ~1B-parameter bf16 model, on the CPU.

Builds a Llama-shaped model in bf16 with random weights (hidden 2048, 16 layers, vocab 32000:
about 0.95 B parameters, 1.9 GB), then times, each ``--repeats`` times in this one process:

- ``before``: the fingerprint as it was until this change: sha256 over every base tensor's bytes,
  each copied out with ``.contiguous().view(uint8).numpy().tobytes()`` (commit 22dd608);
- ``after``: ``adaptr.hf.checks.base_fingerprint`` (identity + sampled values, the same model
  wrapped with a PEFT LoRA on all linear layers, as training sees it);
- ``sha256_zero_copy``: the plain library's fastest full-content hash for the same bytes
  (hashlib over each tensor's memory, no copy), to show what hashing everything costs at best.

With ``--layers-7b N`` it also times ``after`` on N layers of Llama-2-7B's exact shapes (hidden
4096, MLP 11008, vocab 32000) and extrapolates to the 32 layers of the real model: the new pass
costs per tensor and per row/column, not per byte, so each layer of a given shape costs the same.

    python benchmarks/fingerprint.py [--repeats 3] [--layers-7b 2] [--json-out F]

Prints JSON. Not run in CI; figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path


def build(hidden: int, intermediate: int, layers: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=hidden // 128,
                         num_key_value_heads=hidden // 128, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float32).to(torch.bfloat16))
    return model


def old_fingerprint(model) -> str:
    """The fingerprint before this change, verbatim in what it does."""
    import torch

    from adaptr.hf.checks import plain_name

    digest = hashlib.sha256()
    named = ((plain_name(n), p) for n, p in model.named_parameters() if "lora_" not in n)
    for name, param in sorted(named, key=lambda item: item[0]):
        data = param.detach()
        digest.update(name.encode())
        digest.update(data.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def zero_copy_sha256(model) -> str:
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if "lora_" not in name:
            digest.update(memoryview(param.detach().view(torch.uint8).numpy()))
    return digest.hexdigest()


def timed(fn, model, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(model)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4)}


def wrapped(model):
    import warnings

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, LoraConfig(r=16, target_modules="all-linear"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers-7b", type=int, default=2)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    import torch

    from adaptr.hf.checks import base_fingerprint

    model = build(2048, 5632, 16, 32000)
    params = sum(p.numel() for p in model.parameters())
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()]},
        "model_1b": {"parameters": params, "bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                     "tensors": len(list(model.parameters())), "dtype": "bfloat16"},
        "before": timed(old_fingerprint, model, args.repeats),
        "sha256_zero_copy": timed(zero_copy_sha256, model, args.repeats),
    }
    model = wrapped(model)
    report["after"] = timed(base_fingerprint, model, args.repeats)
    report["speedup"] = round(report["before"]["median_s"] / report["after"]["median_s"], 1)
    del model
    if args.layers_7b:
        part = wrapped(build(4096, 11008, args.layers_7b, 32000))
        empty = build(4096, 11008, 0, 32000)  # embeddings, final norm and lm_head only: no layers to wrap
        report["llama_7b_shapes"] = {"layers_measured": args.layers_7b}
        for label, fn in (("after", base_fingerprint), ("before", old_fingerprint)):
            cost, fixed = timed(fn, part, args.repeats), timed(fn, empty, args.repeats)
            per_layer = (cost["median_s"] - fixed["median_s"]) / args.layers_7b
            report["llama_7b_shapes"][label] = {
                "pass_s": cost, "no_layers_s": fixed, "per_layer_s": round(per_layer, 5),
                "extrapolated_32_layers_s": round(fixed["median_s"] + 32 * per_layer, 4)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
