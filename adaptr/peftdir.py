"""PEFT adapter directories: check one against a base and import it, without importing torch.

The check reads only JSON and safetensors headers: the adapter's LoRA tensors must name modules
that exist in the base, with ``lora_A`` shaped ``[r, in]`` and ``lora_B`` shaped ``[out, r]``
for the base weight ``[out, in]``, and ``r`` as the adapter config says.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .store import CONFIG_FILE, RECORD_FILE, WEIGHTS_FILE, is_pickle  # noqa: F401 (peftdir.CONFIG_FILE ...)
from .errors import ConflictError, NotFoundError, UsageError
from .records import VersionRecord
from .refs import NAME_RE
from .registry import RELATIONS, Registry, crash_point
from .safetensors_meta import model_tensors, read_header

PICKLED_WEIGHTS = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the base model's own names

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight$")
_LORA_EMBEDDING = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<part>A|B)(?:\.[^.]+)?$")
_RESAVE = "load it with PEFT and save it with save_pretrained(dir, safe_serialization=True)"
# Initialisations that rewrite the base weights (W - B·A); such an adapter fits only that base.
BASE_ALTERING_INITS = ("pissa", "olora", "corda", "loftq")


def strip_peft_prefix(name: str) -> str:
    """A parameter or tensor name without PEFT's ``base_model.model.`` wrapper prefix."""
    return name.removeprefix(PEFT_PREFIX)


@dataclass
class AdapterDir:
    """A checked adapter directory: its config, its tensor headers and the files to import."""

    path: Path
    config: dict
    tensors: dict[str, dict]
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)


def read_adapter_dir(path: Path | str) -> AdapterDir:
    """Read and check the files of a PEFT LoRA directory (not yet against a base)."""
    path = _adapter_root(Path(path).expanduser())
    config = _read_config(path)
    _refuse_base_altering_init(path, config)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        if (path / PICKLED_WEIGHTS).is_file():
            raise UsageError(
                f"{path} holds only {PICKLED_WEIGHTS}: pickled weights are not accepted",
                f"convert with PeftModel.from_pretrained(base, dir).save_pretrained(out, "
                f"safe_serialization=True), then import out")
        raise UsageError(f"{path} has no {WEIGHTS_FILE}", f"is this a PEFT adapter? {_RESAVE}")
    tensors = read_header(weights, whole=True)
    if not any(_LORA_KEY.match(k) or _LORA_EMBEDDING.match(k) for k in tensors):
        raise UsageError(f"{weights} holds no LoRA tensors (lora_A / lora_B)",
                         "import a LoRA adapter saved by PEFT")
    files, skipped = _importable_files(path)
    return AdapterDir(path=path, config=config, tensors=tensors, files=files, skipped=skipped,
                      record=_read_record(path))


def _adapter_root(path: Path) -> Path:
    """The folder holding the adapter: ``path``, or the one subfolder PEFT wrote for an adapter
    saved under a name other than ``default`` (``save_pretrained(dir)`` puts it in ``dir/NAME``)."""
    if not path.is_dir():
        raise NotFoundError(f"{path} is not a directory", "pass the folder that save_pretrained wrote")
    if (path / CONFIG_FILE).is_file():
        return path
    named = [child for child in sorted(path.iterdir()) if (child / CONFIG_FILE).is_file()]
    if len(named) == 1:
        return named[0]
    if named:
        raise UsageError(f"{path} holds {len(named)} named adapters ({', '.join(c.name for c in named)})",
                         f"import one of them, e.g. {named[0]}")
    return path


def _refuse_base_altering_init(path: Path, config: dict) -> None:
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_ALTERING_INITS):
        raise UsageError(f"{path} was initialised with init_lora_weights={init}, which rewrites the base "
                         "weights: it only fits the base PEFT modified", "save it converted to a plain LoRA: "
                         "save_pretrained(out, path_initial_model_for_weight_conversion=...) and import out")


def _read_config(path: Path) -> dict:
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise UsageError(f"{path} is not a PEFT adapter directory: {CONFIG_FILE} is missing",
                         "pass the folder that PeftModel.save_pretrained wrote")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config_file} is not valid JSON ({exc})".replace("\n", " "),
                         "re-save the adapter with PEFT") from None
    if not isinstance(config, dict):
        raise UsageError(f"{config_file} must hold a JSON object", "re-save the adapter with PEFT")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise UsageError(f"{path} is a PEFT {peft_type or 'untyped'} adapter; adaptr handles LoRA only",
                         "import an adapter whose adapter_config.json says \"peft_type\": \"LORA\"")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UsageError(f"{config_file} has no valid rank r (found {rank!r})",
                         "re-save the adapter with PEFT")
    for key, (valid, what) in _CONFIG_TYPES.items():
        if config.get(key) is not None and not valid(config[key]):
            raise UsageError(f"{config_file}: {key} is {config[key]!r}, not {what}", "re-save the adapter with PEFT")
    return config


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# The keys of adapter_config.json that adaptr reads, and what PEFT writes there.
_CONFIG_TYPES = {
    "lora_alpha": (_number, "a number"),
    "target_modules": (lambda v: isinstance(v, str) or _names(v), "a list of module names or a regex"),
    "modules_to_save": (_names, "a list of module names"),
    "rank_pattern": (lambda v: isinstance(v, dict) and all(isinstance(r, int) and r > 0 for r in v.values()),
                     "a mapping of module patterns to ranks"),
    "alpha_pattern": (lambda v: isinstance(v, dict) and all(_number(a) for a in v.values()),
                      "a mapping of module patterns to alphas"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "use_dora": (lambda v: isinstance(v, bool), "true or false"),
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    "bias": (lambda v: v in ("none", "all", "lora_only"), "none, all or lora_only"),
    "base_model_name_or_path": (lambda v: isinstance(v, str), "a model id or path"),
    "init_lora_weights": (lambda v: isinstance(v, (bool, str)), "true, false or an init method name"),
}


def _read_record(path: Path) -> dict:
    """``adaptr.json`` beside the weights (written by adaptr exports and Hub pushes), if any."""
    record_file = path / RECORD_FILE
    if not record_file.is_file():
        return {}
    try:
        data = json.loads(record_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"{record_file} is not valid JSON", f"fix or delete {RECORD_FILE}") from None
    return data if isinstance(data, dict) else {}


def _importable_files(path: Path) -> tuple[list[str], list[str]]:
    """Top-level files to copy; pickles (``training_args.bin``, ``*.pt``) are left behind."""
    files, skipped = [], []
    for child in sorted(path.iterdir()):
        if not child.is_file() or child.name.startswith("adaptr-manifest"):
            continue
        (skipped if is_pickle(child.name) else files).append(child.name)
    return files, skipped


# -- checking against a base ---------------------------------------------------------------


def base_weight_key(adapter_key: str) -> tuple[str, str] | None:
    """``(base weight key, "A" | "B")`` for a LoRA tensor key, or None for other tensors."""
    match = _LORA_KEY.match(adapter_key) or _LORA_EMBEDDING.match(adapter_key)
    if not match:
        return None
    module = match["module"]
    module = strip_peft_prefix(module)
    return f"{module}.weight", match["part"][-1]


def _find_base_key(key: str, base: dict[str, dict]) -> str | None:
    # A base saved as the bare backbone lacks the "model." prefix the causal-LM wrapper adds.
    for candidate in (key, key.removeprefix("model."), f"model.{key}"):
        if candidate in base:
            return candidate
    return None


def expected_rank(config: dict, base_key: str) -> int:
    """``r``, or the ``rank_pattern`` entry that matches the module (PEFT's own matching rule)."""
    module = base_key.removesuffix(".weight")
    for pattern, rank in (config.get("rank_pattern") or {}).items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return int(rank)
    return int(config["r"])


def check_against_base(adapter: AdapterDir, base_weights: dict[str, dict], base_name: str) -> int:
    """Raise ConflictError at the first LoRA tensor that does not fit the base; return the count."""
    checked = 0
    fan_in_fan_out = bool(adapter.config.get("fan_in_fan_out"))
    for key, info in sorted(adapter.tensors.items()):
        found = base_weight_key(key)
        if found is None:
            continue
        wanted, part = found
        base_key = _find_base_key(wanted, base_weights)
        if base_key is None:
            raise ConflictError(f"{key}: base {base_name!r} has no module "
                                f"{wanted.removesuffix('.weight')!r}", _mismatch_hint(adapter))
        base_shape = base_weights[base_key]["shape"]
        problem = _shape_problem(key, part, info["shape"], base_shape,
                                 expected_rank(adapter.config, base_key), fan_in_fan_out)
        if problem:
            raise ConflictError(f"{problem} (base {base_name!r} weight {base_key} is {base_shape})",
                                _mismatch_hint(adapter))
        checked += 1
    return checked


def _mismatch_hint(adapter: AdapterDir) -> str:
    hint = "import this adapter against the base it was trained on (--base)"
    trained_on = adapter.config.get("base_model_name_or_path")
    return f"{hint}; its adapter_config.json names {trained_on}" if trained_on else hint


def _shape_problem(key: str, part: str, shape: list[int], base_shape: list[int], rank: int,
                   fan_in_fan_out: bool) -> str | None:
    if len(base_shape) != 2 or len(shape) != 2:
        # Convolutions and other layouts: only the rank dimension is checked.
        rank_dim = shape[0] if part == "A" else (shape[1] if len(shape) > 1 else None)
        return None if rank_dim == rank else f"{key} has rank {rank_dim}, the config says r={rank}"
    # GPT-2's Conv1D stores [in, out]; an embedding's factors are A [r, num] and B [dim, r]. PEFT
    # picks the layout by layer type (GPT-2's lm_head is a Linear under fan_in_fan_out=true), so a
    # tensor fits if it fits the layout the config names, or else the other one.
    transposed = fan_in_fan_out or "lora_embedding_" in key
    layouts = [transposed] if "lora_embedding_" in key else [transposed, not transposed]
    wants = []
    for flipped in layouts:
        in_features, out_features = base_shape if flipped else base_shape[::-1]
        wants.append([rank, in_features] if part == "A" else [out_features, rank])
    if list(shape) not in wants:
        return f"{key} is {list(shape)}, expected {wants[0]} for r={rank}"
    return None


def base_tensors(base: dict) -> dict[str, dict] | None:
    """Tensor headers of a registered base, or None when it has no local files."""
    if not base.get("path") or not Path(base["path"]).is_dir():
        return None
    tensors = model_tensors(Path(base["path"]))
    return _with_tied_head(tensors, Path(base["path"])) if tensors else None


def _with_tied_head(tensors: dict[str, dict], base_dir: Path) -> dict[str, dict]:
    """A base that ties ``lm_head`` to its input embedding stores only the embedding; an adapter
    may still target ``lm_head``, whose weight is then the embedding's."""
    try:
        config = json.loads((base_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return tensors
    if not config.get("tie_word_embeddings") or "lm_head.weight" in tensors:
        return tensors
    vocab = config.get("vocab_size")
    embeddings = [k for k, v in tensors.items() if len(v["shape"]) == 2 and v["shape"][0] == vocab]
    if len(embeddings) == 1:
        tensors = {**tensors, "lm_head.weight": tensors[embeddings[0]]}
    return tensors


def portable_config(config: dict, base: dict, *, base_dir: Path | None = None, public: bool = False) -> dict:
    """``adapter_config.json`` for use away from this registry (export, push). Its base is
    ``base_dir`` (a base exported beside it) when given; else a Hub base by its id and pinned
    commit (``AutoPeftModel`` then loads it anywhere); else, with ``public`` (a Hub push),
    nothing, since a local path means nothing elsewhere and names this machine; else the base's
    local directory."""
    config = dict(config)
    if base_dir is not None:
        config["base_model_name_or_path"], config["revision"] = str(base_dir), None
    elif base.get("source_kind") == "hub":
        config["base_model_name_or_path"], config["revision"] = base["source"], base.get("revision")
    elif public:
        config["base_model_name_or_path"], config["revision"] = None, None
    elif base.get("path"):
        config["base_model_name_or_path"] = base["path"]
    return config


# -- importing -----------------------------------------------------------------------------


def default_name(path: Path) -> str:
    """An adapter name made from a directory name: invalid characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).resolve().name)
    name = re.sub(r"-v[0-9]+$", "", name.lstrip("._-").replace("..", "."))[:96].rstrip("-") or "adapter"
    return name if NAME_RE.match(name) else "adapter"


def import_adapter(registry: Registry, path: Path | str, *, base: str, name: str | None = None,
                   parent: str | None = None, relation: str | None = None) -> dict:
    """Check a PEFT adapter directory against ``base`` and publish it as a new version."""
    path = Path(path).expanduser()
    base_row = registry.base(base)
    parents = _parent_edges(registry, parent, relation, base_row)
    adapter = read_adapter_dir(path)
    tensors = base_tensors(base_row)
    if tensors is None:
        print(f"warning: base {base!r} has no local weights; tensor shapes were not checked",
              file=sys.stderr)
    else:
        check_against_base(adapter, tensors, base)
    record = VersionRecord(producer="import", imported_from=str(adapter.path.resolve()),
                           base_model_name_or_path=adapter.config.get("base_model_name_or_path"),
                           skipped_files=adapter.skipped)
    stage = adapter.record.get("stage")
    stage = stage if isinstance(stage, str) and NAME_RE.match(stage) else "import"
    with registry.store.staging("import") as staged:
        for file_name in adapter.files:
            shutil.copyfile(adapter.path / file_name, staged / file_name)
        crash_point("after-stage")
        version = registry.publish_adapter(
            staged, name=name or default_name(path), base=base, stage=stage,
            parents=parents, config=adapter.config, record=record)
    return version


def _parent_edges(registry: Registry, parent: str | None, relation: str | None,
                  base_row: dict) -> list[tuple[dict, str, dict]]:
    if parent is None:
        if relation is not None:
            raise UsageError("--relation needs --parent", "pass --parent REF as well, or drop --relation")
        return []
    relation = relation or "continued"
    if relation not in RELATIONS:
        raise UsageError(f"unknown relation {relation!r}", f"use one of {', '.join(RELATIONS)}")
    node = registry.node(parent)
    if node["kind"] == "adapter" and relation != "merged" and node["base"] != base_row["name"]:
        raise ConflictError(
            f"{node['ref']} was trained on base {node['base']!r}, not {base_row['name']!r}: "
            f"a {relation} child shares its parent's base",
            f"use --base {node['base']}, or --relation merged if the parent was merged into the base")
    return [(node, relation, {"source": "import"})]
