"""Built-in stage `merge` and the `adaptr merge` / `adaptr export` commands."""

from adaptr import Stage, hookimpl

from .config import MergeConfig


@hookimpl
def register_stages(register):
    from . import stage

    register(Stage("merge", MergeConfig, run=stage.run, check=stage.check, inputs="parent",
                   takes_data=False, command="merge", outputs=("adapter", "base"),
                   help="merge an adapter chain into a derived base, or combine adapters into a new one"))


@hookimpl
def register_commands(cli):
    from . import commands

    commands.register(cli)
