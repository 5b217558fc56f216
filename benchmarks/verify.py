"""What verify-before-use costs: a 50 MB adapter before `train --from`, a 1.7 GB base before `merge`.

Generates the merge benchmark's bf16 Llama-shaped base (about 1.7 GB in 6 shards) and a LoRA on
every linear layer sized to about 50 MB, registers both, and times, in this process and with the
files in the page cache (as they are when a command reads them right after verifying):

- ``registry.verified(adapter)``: full sha256 of the adapter's files against its manifest;
- ``registry.verified(base)``: a stat of every recorded base file (size and mtime unchanged);
- the same after every base file's mtime changed (each file re-hashed once: a copied base);
- ``doctor``'s deep check of the base (every file re-hashed);

and, in fresh subprocesses, the plain-library work each command does anyway, to put the figures
in proportion: loading the base and the adapter with transformers + PEFT (what `train --from`
does before its first step) and the streaming merge (what `merge --into-base` does). JSON out.

    python benchmarks/verify.py [--repeats 5] [--workdir DIR] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge as merge_bench  # noqa: E402  (the same generated model and adapter)

ADAPTER_RANK = 23  # about 50 MB of fp32 LoRA factors on this model's 98 linear layers


def _median_seconds(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 4), "all_s": [round(t, 4) for t in times]}


def _touch_all(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            os.utime(path)


def _worker(which: str, base: Path, adapter: Path, out: Path) -> None:
    """Run in a fresh process: the plain-library work the command does besides verifying."""
    import torch

    started = time.perf_counter()
    if which == "load":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        from adaptr.hf.merge import plan_merge, write_merged_model

        out.mkdir(parents=True)
        write_merged_model(plan_merge(base, [adapter]), out, "bf16")
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _in_subprocess(which: str, base: Path, adapter: Path, out: Path, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", which, str(base), str(adapter), str(out)],
                              capture_output=True, text=True, check=True)
        times.append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
    shutil.rmtree(out, ignore_errors=True)
    return {"median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times]}


def measure(work: Path, repeats: int) -> dict:
    from adaptr import Registry
    from adaptr.bases import add_local_base
    from adaptr.peftdir import import_adapter

    base_dir, adapter_dir = work / "base", work / "adapter"
    if not base_dir.exists():
        merge_bench.generate_base(base_dir, 2048, 14, 32000, 300)
        merge_bench.generate_adapter(adapter_dir, base_dir, ADAPTER_RANK)
    shutil.rmtree(work / "registry", ignore_errors=True)
    registry = Registry.init(work / "registry")
    started = time.perf_counter()
    base = add_local_base(registry, "big", base_dir)
    base_add_s = time.perf_counter() - started
    adapter = import_adapter(registry, adapter_dir, base="big", name="big-lora")
    for path in [*base_dir.iterdir(), *Path(adapter["path"]).iterdir()]:  # into the page cache
        path.read_bytes()
    adapter_bytes = sum(p.stat().st_size for p in Path(adapter["path"]).iterdir())
    base_bytes = sum(p.stat().st_size for p in base_dir.iterdir())
    figures = {
        "adapter_full_hash": _median_seconds(lambda: registry.verified(adapter), repeats),
        "base_stat_check": _median_seconds(lambda: registry.verified(base), repeats),
        "base_rehash_after_mtime_change": _median_seconds(
            lambda: (_touch_all(base_dir), registry.verified(base)), max(1, repeats // 2)),
        "base_deep_check_doctor": _median_seconds(lambda: registry.verified(base, deep=True), max(1, repeats // 2)),
    }
    plain = {"load_base_and_adapter_with_peft": _in_subprocess("load", base_dir, adapter_dir, work / "o", 2),
             "streaming_merge": _in_subprocess("merge", base_dir, adapter_dir, work / "o", 2)}
    registry.close()
    before_train = figures["adapter_full_hash"]["median_s"] + figures["base_stat_check"]["median_s"]
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "adapter_mb": round(adapter_bytes / 1e6, 1), "base_gb": round(base_bytes / 1e9, 2),
        "base_add_s_one_time": round(base_add_s, 2), "verification": figures, "plain_library_work": plain,
        "train_from": {"verification_s": round(before_train, 4),
                       "share_of_loading": round(before_train / plain["load_base_and_adapter_with_peft"]["median_s"], 4)},
        "merge": {"verification_s": round(before_train, 4),
                  "share_of_merge": round(before_train / plain["streaming_merge"]["median_s"], 4)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", help="where to generate, kept and reused (default: a temporary directory)")
    parser.add_argument("--json-out")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        which, base, adapter, out = args.worker
        _worker(which, Path(base), Path(adapter), Path(out))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="adaptr-verify-bench-"))
    try:
        report = measure(work, args.repeats)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
