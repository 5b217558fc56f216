"""Built-in stage `sft`: supervised fine-tuning of a LoRA adapter with TRL's SFTTrainer."""

from adaptr import hookimpl
from adaptr.trl_stage import MESSAGES, PROMPT_COMPLETION, TEXT, TrlStage

from .config import SftConfig

SFT = TrlStage(
    "sft", SftConfig, trainer="trl:SFTTrainer", trainer_config="trl:SFTConfig",
    formats=(MESSAGES, PROMPT_COMPLETION, TEXT),
    help="Supervised fine-tuning (TRL SFTTrainer): messages, prompt/completion or text data.")


@hookimpl
def register_stages(register):
    register(SFT.stage())
