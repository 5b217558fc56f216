"""What a run records about itself, and the checks that only the adapter's weights changed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import resource
from pathlib import Path

from ..errors import IntegrityError

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "adaptr")
_ADAPTER_MARKERS = ("lora_", "modules_to_save")


def library_versions() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def version_drift(recorded: dict, current: dict) -> list[str]:
    """Libraries whose version differs from a parent's record, as ``name a -> b``."""
    return [f"{name} {recorded[name]} -> {current.get(name, 'missing')}"
            for name in ("torch", "transformers", "peft", "trl")
            if name in recorded and recorded[name] != current.get(name)]


def base_fingerprint(model) -> str:
    """sha256 over the bytes of every non-adapter parameter, in name order."""
    import torch

    digest = hashlib.sha256()
    named = ((_plain_name(name), param) for name, param in model.named_parameters()
             if not any(marker in name for marker in _ADAPTER_MARKERS))
    for name, param in sorted(named, key=lambda item: item[0]):
        data = param.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        digest.update(name.encode())
        digest.update(data.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain_name(name: str) -> str:
    """A base parameter's name whether or not PEFT has wrapped the model."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def parameter_counts(model) -> dict:
    # TRL's `ref` adapter is a frozen copy for the DPO reference, not part of the model trained.
    params = [p for name, p in model.named_parameters() if ".ref." not in name]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {"trainable": trainable, "total": total,
            "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0}


def adapter_state(model, adapter: str) -> dict:
    """The adapter's tensors exactly as ``save_pretrained`` would write them (cloned to CPU)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def expected_shapes(model, adapter: str, r: int, use_dora: bool) -> dict[str, tuple]:
    """Tensor names and shapes a LoRA adapter of rank ``r`` on this model must have."""
    from peft.tuners.lora import LoraLayer

    shapes = {}
    for path, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        prefix = path.replace(f".{adapter}", "")
        if adapter in getattr(module, "lora_embedding_A", {}):
            continue  # embedding adapters have their own layout; counted but not shaped here
        shapes[f"{prefix}.lora_A.weight"] = (r, module.in_features)
        shapes[f"{prefix}.lora_B.weight"] = (module.out_features, r)
        if use_dora:
            shapes[f"{prefix}.lora_magnitude_vector"] = (module.out_features,)
    return shapes


def check_adapter_file(saved_dir: Path, before: dict, expected: dict[str, tuple]) -> dict:
    """Fail unless the saved adapter has exactly the expected LoRA tensors and some changed."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(Path(saved_dir) / "adapter_model.safetensors"))
    lora_keys = {k for k in saved if "lora_" in k}
    missing, extra = set(expected) - lora_keys, lora_keys - set(expected)
    if missing or extra:
        raise IntegrityError(
            f"saved adapter has {len(lora_keys)} LoRA tensors, expected {len(expected)} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})",
            "this is a bug in adaptr or PEFT; the version was not published")
    wrong = [k for k, shape in expected.items() if tuple(saved[k].shape) != shape]
    if wrong:
        raise IntegrityError(f"saved adapter tensor {wrong[0]} has shape {tuple(saved[wrong[0]].shape)}, "
                             f"expected {expected[wrong[0]]}", "the version was not published")
    changed = [k for k, v in saved.items() if k in before and not torch.equal(before[k].to(v.dtype), v)]
    if not changed:
        raise IntegrityError("training left every adapter tensor unchanged",
                             "raise learning_rate or max_steps; the version was not published")
    return {"tensors": len(saved), "lora_tensors": len(lora_keys), "changed_tensors": len(changed)}


def _high_water_rss() -> int:
    """This process's peak RSS. Linux's VmHWM, not ru_maxrss, which survives exec and so can
    report the peak of whoever started the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_record(peak_rss: int) -> dict:
    """Peak memory: CPU RSS (sampled every step and the kernel's high-water mark), GPU
    allocated and reserved (torch's caching allocator)."""
    import torch

    out = {"cpu_peak_rss_bytes": max(peak_rss, _high_water_rss())}
    if torch.cuda.is_available():
        out["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        out["gpu_name"] = torch.cuda.get_device_name()
    return out
