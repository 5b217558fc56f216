"""Settings of the built-in evaluators (part of each result's key: change one, get a new result)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _opt(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class LossSettings:
    """Held-out loss: TRL SFTConfig's names for the tokenisation and masking."""

    batch_size: int = _opt(8, "Rows per forward pass.")
    max_length: int = _opt(1024, "Truncate tokenized rows to this many tokens (SFTConfig.max_length).")
    completion_only_loss: bool = _opt(None, "Loss on completions only (default: yes for prompt/completion data).")
    assistant_only_loss: bool = _opt(False, "Loss on assistant messages only.")


@dataclass
class PreferenceSettings:
    """Preference accuracy: DPO's implicit reward beta * (log p_policy - log p_reference)."""

    beta: float = _opt(0.1, "DPO's beta: scales the reward (DPOConfig.beta).")
    reference: str = _opt("parent", "Reference model: 'parent' (as DPO used it) or a ref / base name.")
    batch_size: int = _opt(8, "Pairs per forward pass.")
    max_length: int = _opt(1024, "Truncate prompt+completion to this many tokens (DPOConfig.max_length).")


@dataclass
class GenerateSettings:
    """Greedy generation on a prompt file (`prompt`, optional `expected` per row)."""

    scorer: str = _opt("exact", "exact (output == expected), regex (re.search), or module:function.")
    pattern: str = _opt(None, "The regex for scorer=regex (default: each row's `expected`).")
    max_new_tokens: int = _opt(64, "Tokens generated per prompt at most.")
    batch_size: int = _opt(8, "Prompts per generate call.")
