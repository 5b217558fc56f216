"""Built-in stage `sft` (placeholder until its own issue lands)."""

from dataclasses import dataclass

from adaptr import MachineError, Stage, hookimpl


@dataclass
class SftConfig:
    pass


def _not_yet(ctx):
    raise MachineError("stage 'sft' is not implemented yet in this version of adaptr",
                       "see the project's open issues")


@hookimpl
def register_stages(register):
    register(Stage("sft", SftConfig, run=_not_yet, check=_not_yet, takes_data=False,
                   help="(not implemented yet)"))
