"""GRPO's reward functions: the built-ins, and ``module:function`` given with ``--reward``.

A reward function is what TRL's GRPOTrainer calls: ``fn(prompts=, completions=, completion_ids=,
**columns)``, the data's other columns passed as lists (plus TRL's ``trainer_state``,
``log_extra`` and ``log_metric``); it returns one float (or None) per completion. Each is
imported and called once on the first rows of the data with a dummy completion in ``check``,
so a function that cannot be imported, raises, or returns the wrong number of scores is refused
before any model loads.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from adaptr import UsageError

_HINT = "see `adaptr train grpo --help` and docs/stages.md (GRPO rewards)"
_CHECK_ROWS = 2
DUMMY_COMPLETION = "The answer is 4."


@dataclass(frozen=True)
class Reward:
    spec: str                    # as given: NAME[=WEIGHT]
    name: str                    # the built-in's name or module:function
    weight: float | None         # None: not given
    func: Callable
    source: str | None = None    # the file it came from (not for built-ins)
    sha256: str | None = None

    def describe(self) -> dict:
        out = {"spec": self.spec, "function": self.name, "weight": 1.0 if self.weight is None else self.weight}
        if self.source:
            out.update(source=self.source, sha256=self.sha256)
        return out


# -- the built-ins ---------------------------------------------------------------------------


def _text(completion) -> str:
    """A completion's text: a string, or the contents of its messages (conversational data)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))


def _length(config) -> Callable:
    target = config.reward_target_length or max(1, config.max_completion_length // 2)

    def length_reward(completion_ids, **kwargs):
        """1 at the target length, falling linearly to 0 at no tokens and at twice the target."""
        return [max(0.0, 1.0 - abs(len(ids) - target) / target) for ids in completion_ids]

    return length_reward


def _regex(config) -> Callable:
    if not config.reward_pattern:
        raise UsageError("reward 'regex' needs a pattern", "give --reward-pattern REGEX")
    try:
        pattern = re.compile(config.reward_pattern)
    except re.error as exc:
        raise UsageError(f"reward_pattern {config.reward_pattern!r} is not a regular expression ({exc})",
                         "fix the pattern (Python `re` syntax)") from None

    def regex_reward(completions, **kwargs):
        """1 when the completion contains a match of the pattern, else 0."""
        return [1.0 if pattern.search(_text(c)) else 0.0 for c in completions]

    return regex_reward


def _think_format(config) -> Callable:
    from trl.rewards import think_format_reward

    def think_format(completions, **kwargs):
        """TRL's think_format_reward: 1 for `<think>...</think>` then an answer, else 0."""
        return think_format_reward([[{"content": _text(c)}] for c in completions])

    return think_format


def _repetition(config) -> Callable:
    from trl.rewards import get_repetition_penalty_reward

    return get_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)


BUILTINS = {"length": _length, "regex": _regex, "think_format": _think_format, "repetition": _repetition}


# -- resolving --------------------------------------------------------------------------------


def parse(spec: str) -> tuple[str, float | None]:
    """``NAME`` or ``NAME=WEIGHT`` -> (name, weight)."""
    name, sep, weight = spec.strip().rpartition("=")
    if not sep or any(c in weight for c in ":/\\"):  # an `=` inside a path is not a weight
        return spec.strip(), None
    try:
        value = float(weight)
    except ValueError:
        raise UsageError(f"reward {spec!r}: weight {weight!r} is not a number", "write NAME=WEIGHT, e.g. length=0.5") from None
    if not math.isfinite(value):
        raise UsageError(f"reward {spec!r}: weight {weight!r} is not a finite number", "give a real weight")
    return name.strip(), value


def resolve(spec: str, config) -> Reward:
    name, weight = parse(spec)
    if name in BUILTINS:
        return Reward(spec, name, weight, BUILTINS[name](config))
    module_name, sep, attribute = name.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"reward {name!r} is neither a built-in nor module:function",
                         f"use one of {', '.join(BUILTINS)}, or module:function / path/to/file.py:function")
    module, source = _import(name, module_name)
    func = getattr(module, attribute, None)
    if func is None:
        raise UsageError(f"reward {name!r}: module {module_name!r} has no {attribute!r}",
                         "name a function defined in that module")
    if not callable(func):
        raise UsageError(f"reward {name!r} is a {type(func).__name__}, not a function", "name a function")
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source and Path(source).is_file() else None
    return Reward(spec, name, weight, func, source, digest)


def _import(name: str, module_name: str):
    """The module of ``module:function``: a file path (``.py``), or a module importable from
    the current directory or the Python path."""
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise UsageError(f"reward {name!r}: file {path} not found", "check the path before the colon")
            module_spec = importlib.util.spec_from_file_location(f"adaptr_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module, str(path)
        if os.getcwd() not in sys.path:  # as `python -m` would: a module beside the user
            sys.path.append(os.getcwd())
        module = importlib.import_module(module_name)
        return module, getattr(module, "__file__", None)
    except UsageError:
        raise
    except BaseException as exc:  # whatever importing the user's module raises (SyntaxError too)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(f"reward {name!r}: cannot import {module_name!r} ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})", "fix the module, or the name before the colon") from None


def resolve_all(config) -> list[Reward]:
    specs = config.reward or []
    if not specs:
        raise UsageError("grpo needs at least one reward function",
                         "give --reward NAME (length, regex, think_format, repetition, or module:function)")
    rewards = [resolve(spec, config) for spec in specs]
    names = [r.name for r in rewards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"reward {twice[0]!r} is given twice", "give each reward once, with a weight if needed")
    return rewards


def weights(rewards: list[Reward], reward_weights) -> list[float] | None:
    """TRL's ``reward_weights``: from NAME=WEIGHT, or as given with --set reward_weights."""
    inline = [r.weight for r in rewards]
    if reward_weights is not None:
        if any(w is not None for w in inline):
            raise UsageError("reward weights given both as NAME=WEIGHT and as reward_weights",
                             "give them one way")
        if len(reward_weights) != len(rewards):
            raise UsageError(f"reward_weights has {len(reward_weights)} weights for {len(rewards)} reward functions",
                             "give one weight per --reward, in the same order")
        return list(reward_weights)
    if all(w is None for w in inline):
        return None
    return [1.0 if w is None else w for w in inline]


# -- calling each once, in check ----------------------------------------------------------------


def call_once(reward: Reward, rows: list[dict], row_numbers: list[int], path, tokenizer) -> None:
    """Call the function as GRPOTrainer will, on the first rows with a dummy completion."""
    rows, row_numbers = rows[:_CHECK_ROWS], row_numbers[:_CHECK_ROWS]
    prompts = [row["prompt"] for row in rows]
    completions = [[{"role": "assistant", "content": DUMMY_COMPLETION}] if isinstance(p, list) else
                   " " + DUMMY_COMPLETION for p in prompts]
    ids = tokenizer(text=DUMMY_COMPLETION, add_special_tokens=False)["input_ids"]
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in ("prompt", "completion")}
    from transformers import TrainerState

    where = f"rows {', '.join(map(str, row_numbers))} of {path}" if len(rows) > 1 else f"row {row_numbers[0]} of {path}"
    try:
        out = reward.func(prompts=prompts, completions=completions, completion_ids=[list(ids) for _ in rows],
                          trainer_state=TrainerState(), log_extra=lambda *a, **k: None,
                          log_metric=lambda *a, **k: None, **columns)
        if inspect.isawaitable(out):
            import asyncio  # only for an async reward function (asyncio costs ~20 ms to import)

            out = asyncio.run(_awaited(out))
    except Exception as exc:  # whatever the user's function raises
        raise UsageError(f"reward {reward.name!r} raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]} "
                         f"(called on {where} with a dummy completion)",
                         "fix the function: it gets prompts=, completions=, completion_ids= and the data's "
                         "other columns as keyword lists") from None
    try:
        scores = list(out)
    except TypeError:
        raise UsageError(f"reward {reward.name!r} returned a {type(out).__name__}, not a list of scores "
                         f"(called on {where})", "return one float per completion") from None
    if len(scores) != len(rows):
        raise UsageError(f"reward {reward.name!r} returned {len(scores)} scores for {len(rows)} completions "
                         f"(called on {where})", "return exactly one float (or None) per completion")
    odd = [s for s in scores if s is not None and (isinstance(s, bool) or not isinstance(s, numbers.Real))]
    if odd:
        raise UsageError(f"reward {reward.name!r} returned a {type(odd[0]).__name__} score ({odd[0]!r}) "
                         f"(called on {where})", "return floats (None where the reward does not apply)")


async def _awaited(awaitable):
    return await awaitable
