"""The merge stage's configuration: one dataclass, from which the CLI and the TUI form derive."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr import UsageError

METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties")
SAME_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties")
DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class MergeConfig:
    """Parameters:
        into_base: merge the adapter (and its stacked parents) into its base: a derived base.
        dtype: dtype of the derived base's weights.
        adapters: further adapter refs to combine with ``--from`` (a weighted merge).
        method: how to combine adapters (PEFT's ``add_weighted_adapter`` combination type).
        weights: one weight per adapter, ``--from`` first (default 1.0 each).
        density: fraction of values kept by ties and dare methods.
        seed: random seed for the dare methods' random pruning.
    """

    into_base: bool = field(default=False, metadata={
        "help": "merge the adapter (and its stacked parents) into its base, making a derived base"})
    dtype: str = field(default="bf16", metadata={"help": "dtype of a derived base: bf16, fp16 or fp32"})
    adapters: list[str] = field(default_factory=list, metadata={
        "help": "further adapter refs to combine with --from (a weighted merge)"})
    method: str | None = field(default=None, metadata={
        "help": "weighted merge method: " + ", ".join(METHODS)})
    weights: list[float] | None = field(default=None, metadata={
        "help": "one weight per adapter, --from first (default 1.0 each)"})
    density: float | None = field(default=None, metadata={
        "help": "fraction of values kept, for ties, dare_linear and dare_ties (0 < D <= 1)"})
    seed: int = field(default=0, metadata={"help": "random seed for the dare methods"})

    def __post_init__(self):
        if isinstance(self.adapters, str):
            self.adapters = [a.strip() for a in self.adapters.split(",") if a.strip()]
        if self.weights is not None:
            self.weights = [_number(w, "weights") for w in self.weights]
        if isinstance(self.density, str):
            self.density = _number(self.density, "density")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}", f"use one of {', '.join(DTYPES)}")


def _number(value, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key}: {value!r} is not a number", "write numbers such as 0.7,0.3") from None
