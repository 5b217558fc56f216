"""Registering base models: what is recorded about a base, computed without importing torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import UsageError
from .registry import Registry
from .safetensors_meta import model_tensors, summarize
from .store import sha256_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")


def tokenizer_sha256(files: dict[str, Path]) -> str:
    """One digest over the tokenizer files present (``name -> path``), the same for local and Hub bases."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if name in files:
            digest.update(name.encode() + sha256_file(files[name]).encode())
    return digest.hexdigest()


def describe_model_dir(path: Path) -> dict:
    """Hashes of config and tokenizer, parameter count, dtype and architecture of a model dir."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{path} has no config.json", "point --from at a transformers model directory")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{config_file} is not valid JSON", "fix or re-download the model") from None
    tensors = model_tensors(path, whole=True)
    if not tensors:
        raise UsageError(f"{path} has no .safetensors weights",
                         "adaptr loads safetensors only; convert pickled weights with transformers first")
    num_parameters, dtype = summarize(tensors)
    return {
        "config_sha256": sha256_file(config_file),
        "tokenizer_sha256": tokenizer_sha256({n: path / n for n in TOKENIZER_FILES if (path / n).is_file()}),
        "num_parameters": num_parameters,
        "dtype": dtype,
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
    }


def human_count(n: int | None) -> str:
    """A parameter count as people say it: 1.5B, 349.0M, 133.1K."""
    if n is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def add_local_base(registry: Registry, name: str, path: Path | str) -> dict:
    """Record a base that lives in a local directory (referenced in place, not copied)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory", "pass a local model directory or a Hub id")
    from .integrity import base_files

    info = describe_model_dir(path)
    return registry.add_base(name, source=str(path), source_kind="local", path=path, info=info,
                             files=base_files(path))
