"""Built-in stage `resume`: continue an interrupted run exactly from a verified checkpoint; and
`adaptr adopt`, which takes in a plain TRL run for it to continue."""

from adaptr import Stage, hookimpl

from .config import ResumeConfig
from .stage import check, run


@hookimpl
def register_stages(register):
    register(Stage("resume", ResumeConfig, run=run, check=check, takes_data=False, command="resume",
                   help="Continue an interrupted or cancelled run from its newest checkpoint that "
                        "verifies (use `adaptr resume RUN`)."))


@hookimpl
def register_commands(cli):
    from . import commands

    commands.register(cli)
