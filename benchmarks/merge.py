"""Streaming merge vs PEFT's merge_and_unload + save_pretrained: peak RSS and wall time.

Generates a multi-shard Llama-shaped bf16 model (random weights, about 1.7 GB with the defaults)
and a LoRA adapter on every linear layer, then runs each merge in its own fresh subprocess,
alternating, and prints JSON. Not run in CI.

    python benchmarks/merge.py [--layers 14] [--hidden 2048] [--shard-mb 300] [--repeats 2] [--json-out F]

The adaptr side is the work of `adaptr merge REF --into-base` without the registry bookkeeping
(sealing the result hashes it once more): plan_merge + write_merged_model. The PEFT side is what
a PEFT user writes: from_pretrained(dtype=bf16) -> PeftModel.from_pretrained -> merge_and_unload
-> save_pretrained.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _llama_config(hidden: int, layers: int, vocab: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                       num_hidden_layers=layers, num_attention_heads=hidden // 128,
                       num_key_value_heads=hidden // 128, tie_word_embeddings=False, dtype="bfloat16")


def _shapes(config) -> dict[str, tuple[int, ...]]:
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = {"model.embed_tokens.weight": (v, h)}
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}self_attn.{name}.weight"] = (h, h)
        shapes[f"{p}mlp.gate_proj.weight"] = (i, h)
        shapes[f"{p}mlp.up_proj.weight"] = (i, h)
        shapes[f"{p}mlp.down_proj.weight"] = (h, i)
        shapes[f"{p}input_layernorm.weight"] = (h,)
        shapes[f"{p}post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def generate_base(out: Path, hidden: int, layers: int, vocab: int, shard_mb: int) -> dict:
    """Random bf16 weights in shards of about ``shard_mb``, with config.json and an index."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    config = _llama_config(hidden, layers, vocab)
    config.save_pretrained(out)
    shapes = _shapes(config)
    groups, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if current and size + nbytes > shard_mb * 2**20:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    groups.append(current)
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for index, names in enumerate(groups, start=1):
        file = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16) for n in names}
        save_file(tensors, out / file, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({n: file for n in names})
        del tensors
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    shard_sizes = [p.stat().st_size for p in out.glob("*.safetensors")]
    largest_tensor = max(torch.Size(s).numel() for s in shapes.values())
    return {"bytes": total, "shards": len(groups), "largest_shard_bytes": max(shard_sizes),
            "largest_tensor_fp32_bytes": 4 * largest_tensor, "parameters": total // 2}


def generate_adapter(out: Path, base_dir: Path, rank: int) -> dict:
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_dir)
    shapes = _shapes(config)
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for name, shape in shapes.items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in TARGETS:
            out_f, in_f = shape
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * 0.01
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.01
    out.mkdir(parents=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS), task_type="CAUSAL_LM",
               base_model_name_or_path=str(base_dir)).save_pretrained(out)
    return {"bytes": (out / "adapter_model.safetensors").stat().st_size, "rank": rank}


# -- workers: each runs in a fresh process ------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a
    worker would report its parent's peak at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * (1024 if sys.platform == "darwin" else 1))


def worker_adaptr(base: Path, adapter: Path, out: Path) -> dict:
    import safetensors.torch  # noqa: F401  (imports torch before the clock starts, as the PEFT side does)

    from adaptr.hf.merge import plan_merge, write_merged_model

    started = time.perf_counter()
    plan = plan_merge(base, [adapter])
    out.mkdir(parents=True)
    write_merged_model(plan, out, "bf16")
    return {"seconds": time.perf_counter() - started}


def worker_peft(base: Path, adapter: Path, out: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(out)
    return {"seconds": time.perf_counter() - started}


def _run_worker(which: str, base: Path, adapter: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", which, str(base), str(adapter), str(out)],
                          capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def _max_ulps(ref_dir: Path, mine_dir: Path, names: list[str]) -> float:
    import torch
    from safetensors import safe_open

    def tensor(directory: Path, name: str):
        index_file = directory / "model.safetensors.index.json"
        file = (json.loads(index_file.read_text())["weight_map"][name] if index_file.exists()
                else "model.safetensors")
        with safe_open(str(directory / file), framework="pt") as fh:
            return fh.get_tensor(name).float()

    worst = 0.0
    for name in names:
        a, b = tensor(ref_dir, name), tensor(mine_dir, name)
        magnitude = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(torch.bfloat16).tiny)
        worst = max(worst, ((a - b).abs() / torch.exp2(torch.floor(torch.log2(magnitude)) - 7)).max().item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-mb", type=int, default=300)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", help="where to generate, kept and reused (default: a temporary directory, "
                                          "removed after)")
    parser.add_argument("--json-out")
    parser.add_argument("--worker", nargs=4, metavar=("WHICH", "BASE", "ADAPTER", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        work, *numbers = args.generate
        hidden, layers, vocab, shard_mb, rank = map(int, numbers)
        work = Path(work)
        base = generate_base(work / "base", hidden, layers, vocab, shard_mb)
        adapter = generate_adapter(work / "adapter", work / "base", rank)
        (work / "generated.json").write_text(json.dumps({"base": base, "adapter": adapter}))
        return
    if args.worker:
        which, base, adapter, out = args.worker
        result = (worker_adaptr if which == "adaptr" else worker_peft)(Path(base), Path(adapter), Path(out))
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="adaptr-merge-bench-"))
    try:
        base_dir, adapter_dir = work / "base", work / "adapter"
        if not base_dir.exists():
            subprocess.run([sys.executable, __file__, "--generate", str(work), str(args.hidden), str(args.layers),
                            str(args.vocab), str(args.shard_mb), str(args.rank)], check=True)
        generated = json.loads((work / "generated.json").read_text())
        base, adapter = generated["base"], generated["adapter"]
        runs = {"adaptr": [], "peft": []}
        for _ in range(args.repeats):
            for which in ("adaptr", "peft"):
                runs[which].append(_run_worker(which, base_dir, adapter_dir, work / f"out-{which}"))
        names = ["model.layers.0.self_attn.q_proj.weight", f"model.layers.{args.layers - 1}.mlp.down_proj.weight",
                 "model.embed_tokens.weight"]
        aim = base["largest_shard_bytes"] + 2 * base["largest_tensor_fp32_bytes"] + adapter["bytes"] + 2**29
        summary = {which: {"seconds_median": statistics.median(r["seconds"] for r in rs),
                           "seconds_all": [round(r["seconds"], 2) for r in rs],
                           "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs)} for which, rs in runs.items()}
        report = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, **base,
                      "gb": round(base["bytes"] / 1e9, 2)},
            "adapter": adapter, "runs": runs, "summary": summary,
            "aim_peak_rss_mb": round(aim / 2**20, 1),
            "adaptr_within_aim": summary["adaptr"]["peak_rss_mb_max"] <= aim / 2**20,
            "speedup_vs_peft": round(summary["peft"]["seconds_median"] / summary["adaptr"]["seconds_median"], 2),
            "rss_ratio_peft_over_adaptr": round(
                summary["peft"]["peak_rss_mb_max"] / summary["adaptr"]["peak_rss_mb_max"], 2),
            "max_bf16_ulps_vs_peft_sampled": _max_ulps(work / "out-peft", work / "out-adaptr", names),
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
