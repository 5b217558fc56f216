"""Streaming merge of LoRA adapters into a base model, one tensor at a time.

``merge_and_unload`` needs the whole model in memory (a 70B model needs more than 140 GB of RAM).
Here each safetensors shard of the base is read tensor by tensor (``safe_open`` per tensor, so no
mapping of a whole shard stays resident), each target weight gets ``ΔW = scale · B · A`` added in
fp32, and the result is streamed into a new shard. Peak memory is the adapters plus about two
copies of the largest tensor in fp32, whatever the size of the model.

Used by the merge stage (``adaptr merge REF --into-base``, ``adaptr export --merged``), by the DPO
stage's ``--mode merge`` and by ``adaptr demo``.

Planning (:func:`plan_merge`) reads safetensors headers (and, for a base that ties its output
embedding to its input one, builds the model on the meta device to find the pair), so every
check runs before anything is written. A tied base whose embeddings an adapter changes is
written untied: each embedding gets what the adapted model used, as PEFT's ``merge_and_unload``
gives on the same model with the tie broken (on the tied model it would fold an embedding
LoRA into the output layer as well).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConflictError, NotFoundError, UsageError
from .. import records
from ..records import library_versions, peak_rss_bytes
from ..peftdir import BASE_ALTERING_INITS, PEFT_PREFIX, strip_peft_prefix
from ..safetensors_meta import (CONFIG_DTYPE, DTYPE_BYTES, FLOAT_DTYPES, SAFETENSORS_DTYPE,
                                normalize_dtype, read_header, read_metadata)
from ..store import CONFIG_FILE, MANIFEST, RECORD_FILE, UNLOADED_WEIGHT_SUFFIXES, WEIGHTS_FILE

_SKIP_FILES = {MANIFEST, "model.safetensors.index.json", "pytorch_model.bin.index.json", RECORD_FILE}
# PEFT options that change what the adapter means beyond "add scale·B·A to a weight".
_UNSUPPORTED_OPTIONS = {
    "lora_bias": "a trained bias on lora_B", "layer_replication": "layer replication",
    "target_parameters": "nn.Parameter targets", "trainable_token_indices": "trainable tokens",
    "use_qalora": "QA-LoRA", "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "use_bdlora": "block-diagonal LoRA",
}


# -- reading adapters ----------------------------------------------------------------------


def read_adapter_config(adapter_dir: Path, label: str | None = None) -> dict:
    """The adapter's ``adapter_config.json``, checked to be a LoRA adapter adaptr can merge exactly."""
    adapter_dir = Path(adapter_dir)
    label = label or str(adapter_dir)
    path = adapter_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{label}: no adapter_config.json in {adapter_dir}",
                            "the version's files are missing; check them with `adaptr doctor`") from None
    except json.JSONDecodeError:
        raise UsageError(f"{label}: {path} is not valid JSON", "the adapter is damaged") from None
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        raise UsageError(f"{label} has no adapter_model.safetensors",
                         "adaptr merges safetensors adapters only")
    check_lora_config(config, label)
    return config


def check_lora_config(config: dict, label: str) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UsageError(f"{label} is a {peft_type} adapter; adaptr merges LoRA adapters only",
                         "merge it with PEFT's merge_and_unload on a machine with enough memory")
    for key, what in _UNSUPPORTED_OPTIONS.items():
        if config.get(key):
            raise UsageError(f"{label} uses {what} ({key}), which the streaming merge does not support",
                             "merge it with PEFT's merge_and_unload instead")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_ALTERING_INITS):
        raise UsageError(f"{label} was initialised with {init}, which changes the base weights",
                         "convert it to a plain LoRA with PEFT (path_initial_model_for_weight_conversion)")


# -- planning (headers only) ---------------------------------------------------------------


@dataclass
class Update:
    """One change to one base tensor, from one adapter of the chain."""

    adapter: int                 # index into the chain (parent first)
    kind: str                    # "lora" | "embedding" | "dora" | "replace"
    keys: tuple[str, ...]        # tensor names in that adapter's file: (A, B[, magnitude]) or (full,)
    scale: float = 1.0
    fan_in_fan_out: bool = False


@dataclass
class MergePlan:
    base_dir: Path
    adapter_dirs: list[Path]
    shards: list[Path]
    tensors: dict[str, dict]                  # base tensor name -> header entry (dtype, shape, ...)
    shard_of: dict[str, Path]
    updates: dict[str, list[Update]] = field(default_factory=dict)
    scales: list[dict] = field(default_factory=list)   # per adapter: {module: scale}
    untie: bool = False                       # write the output embedding apart from the tied input one
    sources: dict[str, str] = field(default_factory=dict)  # written tensor -> base tensor it starts from


def _base_shards(base_dir: Path) -> tuple[list[Path], dict[str, dict], dict[str, Path]]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({base_dir / name for name in weight_map.values()})
    else:
        shards = sorted(base_dir.glob("*.safetensors"))
    if not shards:
        raise UsageError(f"{base_dir} has no .safetensors weights",
                         "adaptr merges into safetensors bases only")
    tensors, shard_of = {}, {}
    for shard in shards:
        if not shard.is_file():
            raise NotFoundError(f"{shard} is listed in the base's index but missing",
                                "re-download or re-register the base")
        for name, entry in read_header(shard).items():
            tensors[name] = entry
            shard_of[name] = shard
    return shards, tensors, shard_of


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup (peft.utils.other.get_pattern_key)."""
    for key in patterns or {}:
        if re.match(rf"(.*\.)?({key})$", module):
            return patterns[key]
    return default


def lora_scale(config: dict, module: str, rank: int) -> float:
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def group_adapter_keys(header: dict, label: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Split an adapter file's keys into LoRA modules ({module: {part: key}}) and full tensors."""
    modules: dict[str, dict[str, str]] = {}
    full: dict[str, str] = {}
    parts = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "eA",
             ".lora_embedding_B": "eB", ".lora_magnitude_vector": "m",
             ".lora_magnitude_vector.weight": "m"}
    for key in header:
        if not key.startswith(PEFT_PREFIX):
            raise UsageError(f"{label}: unexpected tensor {key!r} in adapter_model.safetensors",
                             "the file was not saved by PEFT's save_pretrained")
        rest = strip_peft_prefix(key)
        for suffix, part in parts.items():
            if rest.endswith(suffix):
                modules.setdefault(rest[:-len(suffix)], {})[part] = key
                break
        else:
            if ".lora_" in rest:
                raise UsageError(f"{label}: tensor {key!r} is not supported by the streaming merge",
                                 "merge it with PEFT's merge_and_unload instead")
            # modules_to_save copies, trained biases (q_proj.base_layer.bias), saved embedding base layers
            full[rest.replace(".base_layer.", ".")] = key
    return modules, full


def _lora_update(index: int, module: str, parts: dict, header: dict, config: dict, base_entry: dict,
                 label: str) -> Update:
    fan = bool(config.get("fan_in_fan_out"))
    if "eA" in parts or "eB" in parts:
        a, b = header[parts["eA"]]["shape"], header[parts["eB"]]["shape"]
        expected, kind, keys = [a[1], b[0]], "embedding", (parts["eA"], parts["eB"])
        if "m" in parts:
            raise UsageError(f"{label}: DoRA on embedding {module} is not supported by the streaming merge",
                             "merge it with PEFT's merge_and_unload instead")
    else:
        if "A" not in parts or "B" not in parts:
            raise UsageError(f"{label}: {module} has lora_A or lora_B missing", "the adapter is damaged")
        a, b = header[parts["A"]]["shape"], header[parts["B"]]["shape"]
        if len(a) != 2 or len(b) != 2:
            raise UsageError(f"{label}: {module} is not a linear layer (shapes {a}, {b})",
                             "the streaming merge handles Linear and Embedding LoRA layers")
        layouts = {True: [a[1], b[0]], False: [b[0], a[1]]}  # fan_in_fan_out -> base weight shape
        if list(base_entry["shape"]) != layouts[fan] and list(base_entry["shape"]) == layouts[not fan]:
            fan = not fan  # PEFT picks the layout by layer type: GPT-2's lm_head is a Linear
        expected = [a[1], b[0]] if fan else [b[0], a[1]]
        kind = "dora" if "m" in parts else "lora"
        keys = (parts["A"], parts["B"]) + ((parts["m"],) if "m" in parts else ())
    if list(base_entry["shape"]) != expected:
        raise ConflictError(f"{label}: {module} update has shape {expected}, the base weight {base_entry['shape']}",
                            "the adapter was trained on another base")
    rank = a[0]
    return Update(index, kind, keys, lora_scale(config, module, rank), fan)


def plan_merge(base_dir: Path, adapter_dirs: list[Path], labels: list[str] | None = None,
               configs: list[dict] | None = None) -> MergePlan:
    """Check that every adapter of the chain fits the base and list the updates; no writes."""
    base_dir = Path(base_dir)
    labels = labels or [str(d) for d in adapter_dirs]
    shards, tensors, shard_of = _base_shards(base_dir)
    plan = MergePlan(base_dir, [Path(d) for d in adapter_dirs], shards, tensors, shard_of)
    tie = _tied_embeddings(base_dir, tensors)
    if tie:  # the output embedding has no tensor of its own: plan it as a copy of the input one
        tensors[tie[0]], shard_of[tie[0]] = dict(tensors[tie[1]]), shard_of[tie[1]]
    for index, (adapter_dir, label) in enumerate(zip(plan.adapter_dirs, labels)):
        config = configs[index] if configs else read_adapter_config(adapter_dir, label)
        header = read_header(adapter_dir / WEIGHTS_FILE)
        modules, full = group_adapter_keys(header, label)
        # A saved full tensor is loaded into the model before the adapter's LoRA applies on top.
        for target, key in sorted(full.items()):
            _plan_replace(plan, index, target, key, header, label)
        plan.scales.append({module: _plan_lora(plan, index, module, parts, header, config, label)
                            for module, parts in sorted(modules.items())})
    if tie:
        _settle_tie(plan, *tie)
    return plan


def _plan_lora(plan: MergePlan, index: int, module: str, parts: dict, header: dict, config: dict,
               label: str) -> float:
    target = f"{module}.weight"
    if target not in plan.tensors:
        raise ConflictError(f"{label} targets {module}, which has no weight {target!r} in the base",
                            "the adapter was trained on another base")
    if plan.tensors[target]["dtype"] not in FLOAT_DTYPES:
        raise UsageError(f"base weight {target} is stored as {plan.tensors[target]['dtype']}",
                         "the streaming merge needs a base in bf16, fp16 or fp32; use an unquantized base")
    update = _lora_update(index, module, parts, header, config, plan.tensors[target], label)
    plan.updates.setdefault(target, []).append(update)
    return update.scale


def _plan_replace(plan: MergePlan, index: int, target: str, key: str, header: dict, label: str) -> None:
    if target not in plan.tensors:
        raise ConflictError(f"{label} saves a full copy of {target!r}, which the base does not have",
                            "the adapter was trained on another base")
    if list(header[key]["shape"]) != list(plan.tensors[target]["shape"]):
        raise ConflictError(f"{label}: {target} has shape {header[key]['shape']}, the base "
                            f"{plan.tensors[target]['shape']} (resized embeddings?)",
                            "merge it with PEFT's merge_and_unload instead")
    plan.updates.setdefault(target, []).append(Update(index, "replace", (key,)))


def _tied_embeddings(base_dir: Path, tensors: dict) -> tuple[str, str] | None:
    """``(output, input)`` embedding names when the base ties them and stores only the input one."""
    config = json.loads((base_dir / "config.json").read_text())
    tied = config.get("tie_word_embeddings")
    if tied is None:  # left out of config.json when it equals the model class's default
        from transformers import AutoConfig

        tied = getattr(AutoConfig.from_pretrained(base_dir), "tie_word_embeddings", False)
    if not tied:
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_dir))
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or output.weight is not inputs.weight:
        return None
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    pair = (f"{names[id(output)]}.weight", f"{names[id(inputs)]}.weight")
    return pair if pair[0] not in tensors and pair[1] in tensors else None


def _settle_tie(plan: MergePlan, output: str, inputs: str) -> None:
    """Untie when an adapter changes either embedding (each keeps what the adapted model used);
    otherwise write the base's single tied tensor as it was."""
    if output in plan.updates or inputs in plan.updates:
        plan.untie = True
        plan.sources[output] = inputs
        if any(u.kind == "dora" for u in plan.updates.get(output, [])):
            raise UsageError(f"DoRA on {output.removesuffix('.weight')} of a base with tied embeddings is not "
                             "supported by the streaming merge", "merge it with PEFT's merge_and_unload instead")
    else:
        del plan.tensors[output], plan.shard_of[output]


# -- executing -----------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _load_adapters(plan: MergePlan) -> list[dict]:
    """Every adapter's tensors, in fp32 (the adapters are small next to one shard)."""
    from safetensors.torch import load_file

    return [{k: v.float() for k, v in load_file(str(d / WEIGHTS_FILE)).items()}
            for d in plan.adapter_dirs]


def _apply(weight, updates: list[Update], adapters: list[dict]):
    """``weight`` (an fp32 tensor this function may modify) with every update applied in order.

    PEFT's merge arithmetic: ``W += scale · B @ A`` (transposed for fan_in_fan_out and for
    embeddings), done in place by one ``addmm_``; DoRA rescales rows by ``m / ‖W₀ + ΔW‖``.
    """
    original = weight
    for update in updates:
        tensors = adapters[update.adapter]
        if update.kind == "replace":
            weight = original = tensors[update.keys[0]].clone()
            continue
        a, b = tensors[update.keys[0]], tensors[update.keys[1]]
        # An embedding's ΔW is (B·A)ᵀ whatever fan_in_fan_out says (PEFT's Embedding ignores it).
        transposed = update.kind == "embedding" or update.fan_in_fan_out
        if update.kind != "dora":
            if weight is original and len(updates) > 1:
                original = original.clone()  # a later DoRA update needs the unmerged weight
            weight.addmm_(a.T, b.T, alpha=update.scale) if transposed else weight.addmm_(b, a, alpha=update.scale)
            continue
        delta = ((a.T @ b.T) if transposed else (b @ a)) * update.scale
        rows = original.T if update.fan_in_fan_out else original
        norm = (rows + (delta.T if update.fan_in_fan_out else delta)).norm(p=2, dim=1)
        factor = (tensors[update.keys[2]] / norm).view(-1, 1)
        weight = (factor.T if update.fan_in_fan_out else factor) * (weight + delta)
    return weight


class _Throttle:
    """Forward progress to a reporter at most twice a second (and always at the end)."""

    def __init__(self, reporter, total: int, description: str):
        self.reporter, self.total, self.last = reporter, total, 0.0
        if reporter:
            reporter.start(total, description)

    def __call__(self, step: int) -> None:
        now = time.monotonic()
        if self.reporter and (step == self.total or now - self.last > 0.5):
            self.reporter.update(step, {})
            self.last = now


def write_merged_model(plan: MergePlan, out_dir: Path, dtype: str = "bf16", reporter=None) -> dict:
    """Stream the merged model into ``out_dir`` (which must exist); return what was done."""
    import torch
    from safetensors import safe_open

    dtype = normalize_dtype(dtype)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    adapters = _load_adapters(plan)
    target_dtype = _torch_dtype(dtype)
    progress = _Throttle(reporter, len(plan.tensors), "merging")
    done, total_size = 0, 0
    for shard in plan.shards:
        names = sorted((n for n, s in plan.shard_of.items() if s == shard),
                       key=lambda n: plan.tensors[n]["data_offsets"][0])

        def produce(name, _shard=shard):
            with safe_open(str(_shard), framework="pt") as handle:
                tensor = handle.get_tensor(plan.sources.get(name, name))
            if name in plan.updates:
                tensor = _apply(tensor.to(torch.float32, copy=True), plan.updates[name], adapters)
            return tensor.to(target_dtype) if plan.tensors[name]["dtype"] in FLOAT_DTYPES else tensor

        def advance():
            nonlocal done
            done += 1
            progress(done)

        total_size += write_safetensors(out_dir / shard.name, names, plan.tensors, produce,
                                        SAFETENSORS_DTYPE[dtype], _shard_metadata(shard), advance)
    _copy_model_files(plan, out_dir, dtype, total_size)
    if reporter:
        reporter.finish()
    return {"tensors": len(plan.tensors), "tensors_merged": len(plan.updates),
            "shards": len(plan.shards), "bytes_written": total_size, "dtype": dtype,
            "seconds": round(time.perf_counter() - started, 3)}


def _shard_metadata(shard: Path) -> dict:
    metadata = read_metadata(shard)
    return {**metadata, "format": metadata.get("format", "pt")}


def write_safetensors(path: Path, names: list[str], entries: dict[str, dict], produce: Callable,
                      float_dtype: str, metadata: dict, advance: Callable[[], None] = lambda: None) -> int:
    """Write a safetensors file whose tensors are produced one at a time; return the data size.

    The header is known in advance (shapes do not change; float tensors take ``float_dtype``), so
    each tensor is written as soon as it is computed and freed before the next.
    """
    import torch

    header, offset = {}, 0
    for name in names:
        entry = entries[name]
        st_dtype = float_dtype if entry["dtype"] in FLOAT_DTYPES else entry["dtype"]
        size = math.prod(entry["shape"]) * DTYPE_BYTES[st_dtype]
        header[name] = {"dtype": st_dtype, "shape": list(entry["shape"]), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # keep the data 8-byte aligned, as safetensors does
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name in names:
            tensor = produce(name).contiguous()
            expected = header[name]
            if list(tensor.shape) != expected["shape"]:
                raise ConflictError(f"{name}: merged shape {list(tensor.shape)} != {expected['shape']}")
            data = tensor.reshape(-1).view(torch.uint8).numpy()
            if data.nbytes != expected["data_offsets"][1] - expected["data_offsets"][0]:
                raise ConflictError(f"{name}: unexpected dtype {tensor.dtype} while writing {path.name}")
            fh.write(memoryview(data))
            del tensor, data
            advance()
    return offset


def _copy_model_files(plan: MergePlan, out_dir: Path, dtype: str, total_size: int) -> None:
    """Config (dtype, tie updated), index (sizes, untied tensor), tokenizer and the rest; never
    stray weights."""
    base_dir = plan.base_dir
    for path in sorted(base_dir.rglob("*")):
        rel = path.relative_to(base_dir)
        if (not path.is_file() or path.name in _SKIP_FILES or path.suffix in (*UNLOADED_WEIGHT_SUFFIXES, ".safetensors")
                or any(part.startswith(".") for part in rel.parts)):
            continue
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() == "config.json":
            config = json.loads(path.read_text())
            for key in ("dtype", "torch_dtype"):
                if key in config or key == "dtype":
                    config[key] = CONFIG_DTYPE[dtype]
            if plan.untie:
                config["tie_word_embeddings"] = False
            target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(path, target)
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total_size
        for name, source in plan.sources.items():
            data["weight_map"][name] = data["weight_map"][source]
        (out_dir / index.name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- registry level ------------------------------------------------------------------------


def merge_chain(registry, adapter: dict) -> list[dict]:
    """The adapters whose weights make up ``adapter``'s model, parent first, ``adapter`` last.

    ``stacked`` parents stay active under their child, so they are merged before it; a
    ``continued`` parent is superseded by its child's weights, but what it was stacked on still
    applies; a ``merged`` parent is already folded into the child or into its base.
    """
    edges: dict[int, list[dict]] = {}
    for edge in registry.ancestors(adapter["id"]):
        if edge["parent_kind"] == "adapter" and edge["relation"] in ("stacked", "continued"):
            edges.setdefault(edge["child"], []).append(edge)
    chain: list[int] = []

    def beneath(node: int, visiting: frozenset) -> None:
        for edge in edges.get(node, []):
            parent = edge["parent"]
            if parent in visiting:
                continue
            beneath(parent, visiting | {parent})
            if edge["relation"] == "stacked" and parent not in chain:
                chain.append(parent)

    beneath(adapter["id"], frozenset({adapter["id"]}))
    members = [registry.adapter_by_id(node) for node in chain if node != adapter["id"]] + [adapter]
    for member in members:
        if member["base"] != adapter["base"]:
            raise ConflictError(f"{member['ref']} (beneath {adapter['ref']}) was trained on base "
                                f"{member['base']!r}, {adapter['ref']} on {adapter['base']!r}",
                                "a stacked chain must share one base")
    return members


def plan_for_adapter(registry, adapter: dict) -> tuple[dict, list[dict], MergePlan]:
    """Resolve ``adapter``'s chain and base, check everything, and plan the merge (no writes)."""
    chain = merge_chain(registry, adapter)
    base = registry.base(adapter["base"])
    if not base.get("path") or not Path(base["path"]).is_dir():
        raise NotFoundError(f"base {base['name']!r} has no local model directory",
                            "download it first (`adaptr base add NAME --from HUB_ID`)")
    plan = plan_merge(Path(base["path"]), [Path(a["path"]) for a in chain], [a["ref"] for a in chain])
    return base, chain, plan


def default_base_name(adapter: dict) -> str:
    return f"{adapter['ref']}-merged"


def check_into_base(registry, adapter: dict, name: str | None, dtype: str | None):
    """Every check of :func:`merge_adapter_into_base`, without writing anything.

    Returns ``(name, base, chain, plan, dtype)``.
    """
    dtype = normalize_dtype(dtype)
    name = name or default_base_name(adapter)
    registry.check_base_name_free(name)
    base, chain, plan = plan_for_adapter(registry, adapter)
    return name, base, chain, plan, dtype


def merge_adapter_into_base(ctx, adapter: dict, name: str | None = None, dtype: str | None = "bf16") -> dict:
    """Merge ``adapter`` (and its stacked parents) into its base in the run ``ctx``; publish and
    return the derived base."""
    from ..bases import describe_model_dir

    name, base, chain, plan, dtype = check_into_base(ctx.registry, adapter, name, dtype)
    quantized = [a["ref"] for a in chain if a.record.quantize]
    with ctx.staging("merge") as staged:
        stats = write_merged_model(plan, staged, dtype, ctx.progress_reporter())
        quantized_training = {
            "adapters": quantized, "quantize": chain[-1].record.quantize or "4bit",
            "note": "trained with QLoRA; merged onto the unquantized base weights"} if quantized else None
        merge = records.BaseMerge(
            merged_from=adapter["ref"], chain=[a["ref"] for a in chain], base=base["name"],
            scaling={a["ref"]: _scale_summary(s) for a, s in zip(chain, plan.scales)},
            quantized_training=quantized_training, **stats)
        record = records.BaseRecord(merge=merge, libraries=library_versions(),
                                    memory=records.Memory(cpu_peak_rss_bytes=peak_rss_bytes()))
        parents = [(adapter, "merged", {"dtype": dtype, "chain": merge.chain})]
        parents += [(a, "merged", {"dtype": dtype, "via": "stacked"}) for a in chain[:-1]]
        parents.append((base, "merged", {"role": "base"}))
        return ctx.publish_base(staged, name=name, source=f"merge:{adapter['ref']}", parents=parents,
                                info=describe_model_dir(staged), record=record)


def _scale_summary(scales: dict) -> float | dict:
    values = set(scales.values())
    return values.pop() if len(values) == 1 else scales
