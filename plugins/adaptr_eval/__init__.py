"""Built-in evaluators: held-out loss, preference accuracy and reward margin, greedy generation."""

from adaptr import Evaluator, hookimpl

from .config import GenerateSettings, LossSettings, PreferenceSettings


def _sft_like(row: dict) -> bool:
    return "messages" in row or "text" in row or ("prompt" in row and "completion" in row)


def _preference_like(row: dict) -> bool:
    return "chosen" in row and "rejected" in row


def _prompts_like(row: dict) -> bool:
    return "prompt" in row and not _sft_like(row) and not _preference_like(row)


@hookimpl
def register_evaluators(register):
    from . import generate, loss, preference

    register(Evaluator(
        "loss", LossSettings, check=loss.check, run=loss.run, claims=_sft_like,
        metrics={"loss": False, "perplexity": False},
        help="Held-out loss and perplexity on SFT data, tokenised and masked as SFTTrainer trains."))
    register(Evaluator(
        "preference", PreferenceSettings, check=preference.check, run=preference.run,
        claims=_preference_like, uses_reference=True,
        metrics={"accuracy": True, "margin": True, "chosen_reward": True, "rejected_reward": False},
        help="DPO's implicit reward against a reference (the parent): preference accuracy and mean margin."))
    register(Evaluator(
        "generate", GenerateSettings, check=generate.check, run=generate.run, claims=_prompts_like,
        metrics={"score": True},
        help="Greedy generation on a prompt file, outputs stored, scored by exact match, a regex or "
             "a module:function scorer."))
