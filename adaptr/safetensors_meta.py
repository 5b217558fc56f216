"""Read safetensors headers without importing torch; the one table of dtype names and sizes."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .errors import UsageError

# safetensors' dtype names (its header's "dtype") and their bytes per element.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})  # cast by a merge; the others are kept
# adaptr's names for the precisions it writes, and their spellings in safetensors and config.json.
OUTPUT_DTYPES = ("bf16", "fp16", "fp32")
SAFETENSORS_DTYPE = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
CONFIG_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_DTYPE_ALIASES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "f16": "fp16", "float16": "fp16",
                  "half": "fp16", "fp32": "fp32", "f32": "fp32", "float32": "fp32", "float": "fp32"}


def normalize_dtype(dtype: str | None) -> str:
    """``bf16``/``fp16``/``fp32`` from any common spelling (``BF16``, ``bfloat16``, ``torch.float32``);
    None is bf16."""
    if dtype is None:
        return "bf16"
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPE_ALIASES:
        raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(OUTPUT_DTYPES)}")
    return _DTYPE_ALIASES[key]


def read_header(path: Path, *, whole: bool = False) -> dict[str, dict]:
    """Return ``{tensor_name: {"dtype", "shape", "data_offsets"}}`` from a .safetensors file.

    With ``whole``, also check what safetensors itself checks on load, from the header and the
    file's size alone: every tensor's byte range fits its dtype and shape, the ranges tile the
    data part exactly, and the file is as long as they say (a truncated copy fails here).
    """
    return _read(Path(path), whole)[0]


def read_metadata(path: Path) -> dict[str, str]:
    """The file's ``__metadata__`` (``{}`` if none)."""
    return _read(Path(path), False)[1]


def _read(path: Path, whole: bool) -> tuple[dict[str, dict], dict[str, str]]:
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if whole:
            _check_layout(header, path.stat().st_size - 8 - length)
    except (OSError, struct.error, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file ({exc})",
                         "check that the file is complete: copy or download it again") from None
    return header, metadata


def _check_layout(header: dict, data_size: int) -> None:
    ranges = []
    for name, info in header.items():
        begin, end = info["data_offsets"]
        expected = math.prod(info["shape"]) * DTYPE_BYTES[info["dtype"]]
        if end - begin != expected:
            raise ValueError(f"tensor {name} takes {end - begin} bytes, its shape and dtype need {expected}")
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ValueError(f"the tensors' byte ranges leave a gap or overlap at byte {begin}")
        position = end
    if position != data_size:
        raise ValueError(f"the header describes {position} bytes of data, the file holds {data_size}")


def model_tensors(model_dir: Path, *, whole: bool = False) -> dict[str, dict]:
    """Headers of every safetensors shard of a model directory, merged."""
    tensors: dict[str, dict] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(read_header(shard, whole=whole))
    return tensors


def summarize(tensors: dict[str, dict]) -> tuple[int, str | None]:
    """Parameter count and the most common dtype of a set of tensors."""
    count, by_dtype = 0, {}
    for info in tensors.values():
        n = math.prod(info["shape"])
        count += n
        by_dtype[info["dtype"]] = by_dtype.get(info["dtype"], 0) + n
    dtype = max(by_dtype, key=by_dtype.get) if by_dtype else None
    return count, dtype
