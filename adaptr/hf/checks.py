"""What a run records about itself, and the checks that only the adapter's weights changed."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError
from ..peftdir import strip_peft_prefix
from ..records import peak_rss_bytes
from ..store import WEIGHTS_FILE

_ADAPTER_MARKERS = ("lora_", "modules_to_save")


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`base_fingerprint` saw, per base tensor: its identity and its sampled values.

    The identity is the storage address, version counter, dtype, shape and strides: PyTorch bumps
    a tensor's version on every in-place write made through it or a view of it (optimizer steps
    included), and a replaced tensor has a new address. The values are a sha256 over one element
    of every row and of every column of each matrix (every element of vectors up to 64k): a write
    through ``.data``, the one path around the version counter, is caught whenever it touches a
    sampled element, which a merge, an unmerge, a cast or an update of a whole row always does.
    """

    tensors: dict[str, tuple[tuple, str]]

    @property
    def digest(self) -> str:
        """One sha256 over every tensor's name and sampled values (stable across processes)."""
        digest = hashlib.sha256()
        for name, (_, content) in sorted(self.tensors.items()):
            digest.update(f"{name}={content};".encode())
        return digest.hexdigest()

    def changed(self, later: "Fingerprint", *, identity: bool = True,
                ignore: frozenset[str] = frozenset()) -> list[str]:
        """Names of the base tensors that differ in ``later`` (``identity=False``: values only)."""
        names = sorted((set(self.tensors) | set(later.tensors)) - set(ignore))
        part = slice(None) if identity else slice(1, 2)
        return [n for n in names if self.tensors.get(n, ())[part] != later.tensors.get(n, ())[part]]


def base_fingerprint(model, owned: frozenset[str] | set[str] = frozenset()) -> Fingerprint:
    """Fingerprint every base parameter of ``model`` (wrapped or not) but those in ``owned``.

    ``owned`` are plain names of base parameters that the adapter itself trains and saves (the
    biases of ``bias="all"``). Costs a few small gathers per tensor, whatever the model's size.
    """
    import torch

    tensors = {}
    for name, param in sorted(base_parameters(model, owned).items()):
        data = param.detach()
        identity = (data.data_ptr(), param._version, str(data.dtype), tuple(data.shape),
                    tuple(data.stride()), data.storage_offset(), str(data.device))
        sample = _sample(data).contiguous().view(torch.uint8).cpu().numpy().tobytes()
        content = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|".encode() + sample).hexdigest()
        tensors[name] = (identity, content)
    return Fingerprint(tensors)


def base_parameters(model, owned=frozenset()) -> dict:
    """Plain name -> parameter for every base parameter of ``model`` (adapters' own left out)."""
    out = {}
    for name, param in model.named_parameters():
        if any(marker in name for marker in _ADAPTER_MARKERS):
            continue
        plain = plain_name(name)
        if plain not in owned:
            out[plain] = param
    return out


def _sample(data):
    """Deterministic sampled elements of a tensor: one per row and one per column of a matrix."""
    flat = data.reshape(-1)
    if flat.numel() <= _WHOLE:
        return flat
    return flat.index_select(0, _sample_index(tuple(data.shape), str(data.device)))


_WHOLE = 65536  # vectors (norms, biases) up to this size are taken whole


@functools.lru_cache(maxsize=512)
def _sample_index(shape: tuple[int, ...], device: str):
    """Flat positions: for each row a column, for each column a row, spread by two primes.
    Built once per shape (index_select with it is fast; fancy indexing is not, on CPU threads)."""
    import torch

    numel = math.prod(shape)
    if len(shape) == 1:
        return torch.arange(0, numel, numel // _WHOLE + 1, device=device)
    n_rows, n_cols = shape[0], numel // shape[0]
    r, c = torch.arange(n_rows, device=device), torch.arange(n_cols, device=device)
    return torch.cat([r * n_cols + (r * 7919 + 13) % n_cols, ((c * 104729 + 17) % n_rows) * n_cols + c])


def plain_name(name: str) -> str:
    """A base parameter's name whether or not PEFT has wrapped the model."""
    return strip_peft_prefix(name).replace(".base_layer.", ".").replace(".original_module.", ".")


def parameter_counts(model) -> dict:
    # TRL's `ref` adapter is a frozen copy for the DPO reference, not part of the model trained.
    from .loading import of_adapter

    params = [p for name, p in model.named_parameters() if not of_adapter(name, "ref")]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {"trainable": trainable, "total": total,
            "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0}


def adapter_state(model, adapter: str) -> dict:
    """The adapter's tensors exactly as ``save_pretrained`` would write them (cloned to CPU)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def expected_tensors(model, adapter: str, config) -> dict[str, tuple]:
    """Every tensor ``save_pretrained`` must write for ``adapter``, with its shape.

    Worked out from the LoRA config and the shapes of the base layers: ``lora_A``/``lora_B`` (or
    ``lora_embedding_A``/``_B``) at each adapted layer's rank (``rank_pattern`` applied), DoRA
    magnitudes, full copies of ``modules_to_save``, and the biases that ``bias`` trains.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    shapes = {}
    for path, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and adapter in module.modules_to_save:
            shapes.update({f"{path}.{name}": tuple(p.shape)
                           for name, p in module.original_module.named_parameters()})
        elif isinstance(module, LoraLayer) and adapter in module.r:
            shapes.update(_lora_shapes(path, module, adapter, config))
    shapes.update(_bias_shapes(model, adapter, config))
    return shapes


def _lora_shapes(path: str, module, adapter: str, config) -> dict[str, tuple]:
    from transformers.pytorch_utils import Conv1D

    from ..peftdir import expected_rank

    base = module.get_base_layer()
    rank = expected_rank({"r": config.r, "rank_pattern": config.rank_pattern}, _module_name(path) + ".weight")
    weight = tuple(base.weight.shape)
    if adapter in getattr(module, "lora_embedding_A", {}):
        num, dim = weight
        out = {f"{path}.lora_embedding_A": (rank, num), f"{path}.lora_embedding_B": (dim, rank)}
        width = dim
    else:
        in_features, out_features = (weight if isinstance(base, Conv1D) else weight[::-1])[:2]
        out = {f"{path}.lora_A.weight": (rank, in_features), f"{path}.lora_B.weight": (out_features, rank)}
        width = out_features
    if config.use_dora:
        out[f"{path}.lora_magnitude_vector"] = (width,)
    return out


def _bias_shapes(model, adapter: str, config) -> dict[str, tuple]:
    from peft.tuners.lora import LoraLayer

    if config.bias == "all":
        return {name: tuple(p.shape) for name, p in model.named_parameters()
                if name.endswith(".bias") and not any(m in name for m in _ADAPTER_MARKERS)}
    if config.bias != "lora_only":
        return {}
    return {f"{path}.base_layer.bias": tuple(module.get_base_layer().bias.shape)
            for path, module in model.named_modules()
            if isinstance(module, LoraLayer) and adapter in module.r
            and getattr(module.get_base_layer(), "bias", None) is not None}


def _module_name(path: str) -> str:
    return strip_peft_prefix(path)


def saved_key(param_name: str, adapter: str) -> str:
    """The key ``save_pretrained`` writes for a parameter of ``adapter`` (PEFT's renaming)."""
    key = param_name.replace(f".{adapter}.", ".").replace(".modules_to_save.", ".")
    key = key.removesuffix(f".{adapter}")  # ParameterDict entries: lora_embedding_A.<adapter>
    return key.removesuffix(".weight") if key.endswith(".lora_magnitude_vector.weight") else key


def check_adapter_file(saved_dir: Path, before: dict, expected: dict[str, tuple]) -> dict:
    """Fail unless the saved adapter has exactly the expected tensors and some of them changed."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(Path(saved_dir) / WEIGHTS_FILE))
    missing, extra = set(expected) - set(saved), set(saved) - set(expected)
    if missing or extra:
        raise IntegrityError(
            f"saved adapter has {len(saved)} tensors, expected {len(expected)} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})",
            "this is a bug in adaptr or PEFT; the version was not published")
    wrong = [k for k, shape in expected.items() if tuple(saved[k].shape) != tuple(shape)]
    if wrong:
        raise IntegrityError(f"saved adapter tensor {wrong[0]} has shape {tuple(saved[wrong[0]].shape)}, "
                             f"expected {tuple(expected[wrong[0]])}", "the version was not published")
    changed = [k for k, v in saved.items() if k in before and not torch.equal(before[k].to(v.dtype), v)]
    if not changed:
        raise IntegrityError("training left every adapter tensor unchanged",
                             "raise learning_rate or max_steps; the version was not published")
    lora = [k for k in saved if "lora_" in k]
    return {"tensors": len(saved), "lora_tensors": len(lora), "changed_tensors": len(changed)}


def memory_record(peak_rss: int) -> dict:
    """Peak memory: CPU RSS (sampled every step and the kernel's high-water mark), GPU
    allocated and reserved (torch's caching allocator)."""
    import torch

    out = {"cpu_peak_rss_bytes": max(peak_rss, peak_rss_bytes())}
    if torch.cuda.is_available():
        out["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        out["gpu_name"] = torch.cuda.get_device_name()
    return out
