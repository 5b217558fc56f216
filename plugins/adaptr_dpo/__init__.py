"""Built-in stage `dpo`: preference optimisation of a LoRA adapter with TRL's DPOTrainer.

From a parent in `continue` mode, the parent's adapter is trained further and a frozen copy of it
is the reference policy (TRL's `ref` adapter), so the base weights are in memory once.
"""

from adaptr import UsageError, hookimpl
from adaptr.trl_stage import PREFERENCE, TrlStage, declared_choices

from .config import DpoConfig


def check(ctx, plan) -> None:
    """What DPOTrainer checks only once the model is loaded, or mid-training."""
    if ctx.config.bias != "none":
        raise UsageError(f"dpo with bias={ctx.config.bias}: biases are base weights, shared with TRL's "
                         "reference policy, so the reference would drift as they train",
                         "use bias=none for dpo (train biases in an sft stage)")
    known = declared_choices(type(plan.args), "loss_type")
    unknown = [t for t in plan.args.loss_type if known and t not in known]
    if unknown:
        raise UsageError(f"loss_type {unknown[0]!r} is not a loss TRL's DPOTrainer knows",
                         f"use one of {', '.join(known)}")
    if "exo_pair" in plan.args.loss_type and plan.args.label_smoothing == 0.0:
        raise UsageError("loss_type exo_pair needs label_smoothing > 0", "the EXO paper uses --label-smoothing 0.001")


DPO = TrlStage(
    "dpo", DpoConfig, trainer="trl:DPOTrainer", trainer_config="trl:DPOConfig", formats=(PREFERENCE,),
    reference=True, kept_metrics=("rewards/", "logps/"), check=check,
    help="Preference optimisation (TRL DPOTrainer): prompt/chosen/rejected data.")


@hookimpl
def register_stages(register):
    register(DPO.stage())
