"""Built-in stage `sft`: supervised fine-tuning of a LoRA adapter with TRL's SFTTrainer."""

from adaptr import Stage, hookimpl

from .config import SftConfig
from .stage import check, run


@hookimpl
def register_stages(register):
    register(Stage("sft", SftConfig, run=run, check=check, inputs="base_or_parent",
                   help="Supervised fine-tuning (TRL SFTTrainer): messages, prompt/completion or text data."))
