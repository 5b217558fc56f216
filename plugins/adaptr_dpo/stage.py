"""The `dpo` stage: check and run, both delegated to adaptr's TRL helpers.

From a parent in `continue` mode, the parent's adapter is trained further and a frozen copy of it
is the reference policy (TRL's `ref` adapter), so the base weights are in memory once.
"""

from __future__ import annotations


def check(ctx) -> None:
    from adaptr.hf import training

    training.check(ctx)


def run(ctx) -> None:
    from adaptr.hf import training

    training.train(ctx)
