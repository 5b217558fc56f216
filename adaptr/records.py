"""What a version records about how it was made, measured the same way by every producer.

Imports nothing heavy: library versions come from package metadata, memory from /proc.
"""

from __future__ import annotations

import importlib.metadata
import resource
from pathlib import Path

LIBRARIES = ("adaptr", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors",
             "bitsandbytes", "huggingface_hub", "sqlite-utils", "pluggy", "textual")
# A parent made under other versions of these warns when a child continues it.
DRIFT_LIBRARIES = ("torch", "transformers", "peft", "trl")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (those installed), read from package metadata."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def version_drift(recorded: dict, current: dict) -> list[str]:
    """Libraries whose version differs from a parent's record, as ``name a -> b``."""
    return [f"{name} {recorded[name]} -> {current.get(name, 'missing')}"
            for name in DRIFT_LIBRARIES if name in recorded and recorded[name] != current.get(name)]


def peak_rss_bytes() -> int:
    """This process's peak RSS. Linux's VmHWM, not ru_maxrss, which survives exec and so can
    report the peak of whoever started the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
