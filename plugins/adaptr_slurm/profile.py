"""SLURM profiles: the options a team writes once, in `slurm.yaml` beside the registry or in
`$XDG_CONFIG_HOME/adaptr/slurm.yaml` (`~/.config/adaptr/slurm.yaml`).

The file maps profile names to the executor's options (the same keys as the command line, with
underscores: `partition`, `account`, `qos`, `time`, `nodes`, `gpus_per_node`, `tasks_per_node`,
`signal_seconds`). Profile `default`, if present, applies when no `--profile` is given. Options on
the command line win over the profile.
"""

from __future__ import annotations

import os
from pathlib import Path

from adaptr import UsageError

FILE_NAME = "slurm.yaml"


def candidates(registry_root: Path | None) -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    paths = [Path(registry_root) / FILE_NAME] if registry_root else []
    return [*paths, config_home / "adaptr" / FILE_NAME]


def load(registry_root: Path | None, name: str | None) -> dict:
    """The options of profile ``name`` (``default`` when None; {} when there is none)."""
    import yaml

    for path in candidates(registry_root):
        if not path.is_file():
            continue
        try:
            profiles = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})",
                             "fix the SLURM profile file") from None
        if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
            raise UsageError(f"{path} must map profile names to options",
                             "e.g. `gpu: {partition: gpu, time: '4:00:00'}`")
        if (name or "default") in profiles:
            return dict(profiles[name or "default"])
        if name is not None:
            raise UsageError(f"no SLURM profile {name!r} in {path} (it has: {', '.join(sorted(profiles)) or 'none'})",
                             "pick one of them, or add it to the file")
    if name is not None:
        raise UsageError(f"no SLURM profile {name!r}: no {FILE_NAME} found",
                         f"write one at {' or '.join(str(p) for p in candidates(registry_root))}")
    return {}
