"""Built-in stage `merge` (placeholder until its own issue lands)."""

from dataclasses import dataclass

from adaptr import MachineError, Stage, hookimpl


@dataclass
class MergeConfig:
    pass


def _not_yet(ctx):
    raise MachineError("stage 'merge' is not implemented yet in this version of adaptr",
                       "see the project's open issues")


@hookimpl
def register_stages(register):
    register(Stage("merge", MergeConfig, run=_not_yet, check=_not_yet, takes_data=False,
                   help="(not implemented yet)"))
