"""Scorers for generated outputs: ``exact``, ``regex``, or any ``module:function``.

A ``module:function`` scorer is called as ``function(output, row)`` and returns a number (a bool
counts as 1 or 0). It is imported and tried on every row's ``expected`` output before any model
loads, so a scorer that cannot run on the data fails first; one that raises on a generated output
fails the evaluation with the row and the function named, and nothing is recorded.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from typing import Callable

from adaptr import UsageError


@dataclass
class Scorer:
    name: str
    function: Callable[[str, dict], object]

    def score(self, output: str, row: dict, number: int) -> float:
        try:
            value = self.function(output, row)
        except Exception as exc:  # whatever the user's scorer raises
            raise UsageError(f"scorer {self.name} raised on row {number}: {type(exc).__name__}: {exc}",
                             f"fix {self.name}; nothing was recorded") from None
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(f"scorer {self.name} returned {value!r} for row {number}, not a number",
                             "return a float or a bool")
        return float(value)


def _exact(output: str, row: dict) -> bool:
    return output.strip() == row["expected"].strip()


def resolve(settings, rows: list[dict], numbers: list[int], path) -> Scorer:
    """The scorer the settings name, tried on the data (everything that can fail before generation)."""
    name = settings.scorer
    if name == "exact":
        _need_expected(rows, numbers, path, name)
        return Scorer("exact", _exact)
    if name == "regex":
        return _regex(settings.pattern, rows, numbers, path)
    scorer = Scorer(name, _import(name))
    for row, number in zip(rows, numbers):
        if "expected" in row:
            scorer.score(row["expected"], row, number)  # a dry run on the reference answer
    return scorer


def _need_expected(rows, numbers, path, scorer: str) -> None:
    for row, number in zip(rows, numbers):
        if "expected" not in row:
            raise UsageError(f"{path}: row {number} has no 'expected' output for scorer {scorer}",
                             "add an \"expected\" string to every row, or choose another --set scorer=")


def _regex(pattern: str | None, rows, numbers, path) -> Scorer:
    if pattern is None:
        _need_expected(rows, numbers, path, "regex")
    compiled = {}
    for row, number in zip(rows, numbers):
        text = pattern if pattern is not None else row["expected"]
        try:
            compiled[text] = re.compile(text)
        except re.error as exc:
            where = "the pattern setting" if pattern is not None else f"{path}: row {number}"
            raise UsageError(f"{where}: invalid regex {text!r} ({exc})", "fix the regular expression") from None

    def search(output: str, row: dict) -> bool:
        return compiled[pattern if pattern is not None else row["expected"]].search(output) is not None

    return Scorer("regex", search)


def _import(spec: str):
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise UsageError(f"unknown scorer {spec!r}", "use exact, regex, or module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"scorer {spec}: cannot import {module_name} ({exc})",
                         "check the module name, or add its directory to PYTHONPATH") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"scorer {spec}: {module_name} has no function {function_name!r}",
                         "name a function that takes (output, row) and returns a number")
    return function
