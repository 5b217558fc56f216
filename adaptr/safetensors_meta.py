"""Read safetensors headers and PEFT adapter directories without importing torch."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .errors import UsageError

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(path: Path) -> dict[str, dict]:
    """Return ``{tensor_name: {"dtype", "shape", "data_offsets"}}`` from a .safetensors file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file ({exc})",
                         "check that the file is complete") from None
    header.pop("__metadata__", None)
    return header


def model_tensors(model_dir: Path) -> dict[str, dict]:
    """Headers of every safetensors shard of a model directory, merged."""
    tensors: dict[str, dict] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(read_header(shard))
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
