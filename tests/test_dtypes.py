"""adaptr's one dtype table (adaptr/safetensors_meta.py), checked against torch and safetensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from adaptr.errors import UsageError
from adaptr.safetensors_meta import (CONFIG_DTYPE, DTYPE_BYTES, FLOAT_DTYPES, OUTPUT_DTYPES, SAFETENSORS_DTYPE,
                                     normalize_dtype, read_header)

TORCH = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
         "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
         "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def test_safetensors_names_and_sizes_are_what_safetensors_writes(tmp_path):
    assert set(TORCH) == set(DTYPE_BYTES)
    path = tmp_path / "all.safetensors"
    save_file({name: torch.zeros(3, dtype=dtype) for name, dtype in TORCH.items()}, str(path))
    header = read_header(path, whole=True)
    for name, dtype in TORCH.items():
        assert header[name]["dtype"] == name
        assert DTYPE_BYTES[name] == torch.zeros(1, dtype=dtype).element_size()
    assert FLOAT_DTYPES == {name for name, dtype in TORCH.items() if dtype.is_floating_point and dtype.itemsize >= 2}


def test_output_dtypes_map_to_torch_safetensors_and_config_spellings(tmp_path):
    torch_of = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    assert tuple(torch_of) == OUTPUT_DTYPES
    for name, dtype in torch_of.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({"t": torch.zeros(2, dtype=dtype)}, str(path))
        assert read_header(path)["t"]["dtype"] == SAFETENSORS_DTYPE[name]
        assert CONFIG_DTYPE[name] == str(dtype).removeprefix("torch.")  # config.json's torch_dtype


@pytest.mark.parametrize(("spelling", "expected"), [
    ("BF16", "bf16"), ("bfloat16", "bf16"), ("torch.bfloat16", "bf16"), (None, "bf16"),
    ("F16", "fp16"), ("float16", "fp16"), ("half", "fp16"), ("torch.float16", "fp16"),
    ("F32", "fp32"), ("float32", "fp32"), ("float", "fp32"), ("torch.float32", "fp32"), ("fp32", "fp32"),
])
def test_normalize_dtype_spellings(spelling, expected):
    assert normalize_dtype(spelling) == expected
    if spelling is not None and not spelling.startswith("torch."):
        assert normalize_dtype(getattr(torch, spelling.lower(), None) or spelling) == expected


@pytest.mark.parametrize("spelling", ["int8", "F64", "fp8", ""])
def test_normalize_dtype_refuses_what_adaptr_does_not_write(spelling):
    with pytest.raises(UsageError, match="unknown dtype") as info:
        normalize_dtype(spelling)
    assert "bf16, fp16, fp32" in info.value.hint
