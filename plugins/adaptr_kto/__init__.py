"""Built-in stage `kto`: Kahneman-Tversky optimisation of a LoRA adapter with TRL's KTOTrainer.

Unpaired preference data: ``prompt``, ``completion`` and a boolean ``label`` (is the completion
desirable). From a parent in ``continue`` mode the parent's adapter trains further and a frozen
copy of it is the reference policy (TRL's ``ref`` adapter), as for DPO.
"""

from adaptr import UsageError, hookimpl
from adaptr.trl_stage import UNPAIRED_PREFERENCE, TrlStage

from .config import KtoConfig


def check(ctx, plan) -> None:
    """What KTOTrainer checks only once the model is loaded."""
    args = plan.args
    if ctx.config.bias != "none":
        raise UsageError(f"kto with bias={ctx.config.bias}: biases are base weights, shared with TRL's "
                         "reference policy, so the reference would drift as they train",
                         "use bias=none for kto (train biases in an sft stage)")
    if args.loss_type == "kto":  # the KL estimate pairs each prompt with its batch neighbour's completion
        if args.per_device_train_batch_size < 2:
            raise UsageError("loss_type kto needs per_device_train_batch_size >= 2 (its KL estimate pairs each "
                             "prompt with another row's completion)",
                             "raise per_device_train_batch_size, or use loss_type apo_zero_unpaired")
        if args.train_sampling_strategy != "sequential":
            raise UsageError(f"loss_type kto needs train_sampling_strategy sequential, not "
                             f"{args.train_sampling_strategy!r} (the KL completions are fixed per batch)",
                             "drop train_sampling_strategy, or use loss_type apo_zero_unpaired")


KTO = TrlStage(
    "kto", KtoConfig, trainer="trl:KTOTrainer", trainer_config="trl:KTOConfig", formats=(UNPAIRED_PREFERENCE,),
    reference=True, kept_metrics=("rewards/", "logps/", "kl"), check=check,
    help="Unpaired preference optimisation (TRL KTOTrainer): prompt/completion/label data.")


@hookimpl
def register_stages(register):
    register(KTO.stage())
