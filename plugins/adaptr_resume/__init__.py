"""Built-in stage `resume`: continue an interrupted run exactly from a verified checkpoint."""

from adaptr import Stage, hookimpl

from .config import ResumeConfig
from .stage import check, run


@hookimpl
def register_stages(register):
    register(Stage("resume", ResumeConfig, run=run, check=check, takes_data=False, command="resume",
                   help="Continue an interrupted or cancelled run from its newest checkpoint that "
                        "verifies (use `adaptr resume RUN`)."))
