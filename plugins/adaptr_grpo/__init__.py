"""Built-in stage `grpo`: group relative policy optimisation of a LoRA adapter with TRL's GRPOTrainer.

Prompt-only data; the rewards are functions (``--reward NAME[=WEIGHT]``, repeatable): the
built-ins in :mod:`adaptr_grpo.rewards` or any ``module:function``. Each is imported and called
once on the first rows in ``check``. From a parent in ``continue`` mode the parent's adapter
trains further; with ``beta > 0`` a frozen copy of it is the reference policy (TRL's ``ref``
adapter), as for DPO.
"""

from adaptr import UsageError, hookimpl
from adaptr.trl_stage import PROMPT_ONLY, TrlStage, declared_choices, load_tokenizer

from . import rewards
from .config import GrpoConfig


def check(ctx, plan) -> None:
    """The reward functions, and what GRPOTrainer checks only once the model is loaded."""
    args = plan.args
    known = declared_choices(type(args), "loss_type")
    if known and args.loss_type not in known:
        raise UsageError(f"loss_type {args.loss_type!r} is not a loss TRL's GRPOTrainer knows",
                         f"use one of {', '.join(known)}")
    if args.beta == 0.0:
        plan.reference = None  # no reference pass: TRL adds no `ref` adapter
    elif ctx.config.bias != "none":
        raise UsageError(f"grpo with beta > 0 and bias={ctx.config.bias}: biases are base weights, shared "
                         "with TRL's reference policy, so the reference would drift as they train",
                         "use bias=none, or beta=0")
    found = rewards.resolve_all(ctx.config)
    args.reward_weights = rewards.weights(found, args.reward_weights)
    tokenizer = load_tokenizer(ctx.base)
    for reward in found:
        rewards.call_once(reward, plan.train.rows, plan.train.row_numbers, plan.train.path, tokenizer)
    plan.extra["rewards"] = found  # imported once: training runs and records the functions checked


def trainer_kwargs(ctx, plan) -> dict:
    return {"reward_funcs": [reward.func for reward in plan.extra["rewards"]]}


def record(ctx, plan) -> dict:
    return {"rewards": [reward.describe() for reward in plan.extra["rewards"]]}


GRPO = TrlStage(
    "grpo", GrpoConfig, trainer="trl:GRPOTrainer", trainer_config="trl:GRPOConfig", formats=(PROMPT_ONLY,),
    reference=True, kept_metrics=("reward", "rewards/", "completions/", "kl"), check=check,
    trainer_kwargs=trainer_kwargs, record=record,
    help="Group relative policy optimisation (TRL GRPOTrainer): prompt data, --reward functions.")


@hookimpl
def register_stages(register):
    register(GRPO.stage())
