"""The `sft` stage: check and run, both delegated to adaptr's TRL helpers."""

from __future__ import annotations


def check(ctx) -> None:
    from adaptr.hf import training

    training.check(ctx)


def run(ctx) -> None:
    from adaptr.hf import training

    training.train(ctx)
