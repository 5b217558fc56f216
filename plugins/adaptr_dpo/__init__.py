"""Built-in stage `dpo`: preference optimisation of a LoRA adapter with TRL's DPOTrainer."""

from adaptr import Stage, hookimpl

from .config import DpoConfig
from .stage import check, run


@hookimpl
def register_stages(register):
    register(Stage("dpo", DpoConfig, run=run, check=check, inputs="base_or_parent",
                   help="Preference optimisation (TRL DPOTrainer): prompt/chosen/rejected data."))
