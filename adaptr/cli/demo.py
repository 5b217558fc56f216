"""`adaptr demo`: train a small lineage on a generated tiny model and print it."""

from __future__ import annotations

import click

DEFAULT_DIR = "adaptr-demo"


@click.command("demo")
@click.option("--dir", "directory", default=DEFAULT_DIR, show_default=True,
              help="Directory for the demo's model and registry (must not hold a registry yet).")
def demo_cmd(directory):
    """Generate a tiny base, run sft then dpo --from sft-v1 (then a merge), print the lineage."""
    from ..demo import BASE_NAME, run_demo
    from .common import console
    from .registry_cmds import lineage_tree
    from .common import RichReporter

    reporter = RichReporter()
    try:
        registry = run_demo(directory, reporter=reporter, echo=lambda text: reporter.message(text))
    finally:
        reporter.finish()
    console().print(lineage_tree(registry, BASE_NAME))
    click.echo(f"\nexplore it: ADAPTR_REGISTRY={registry.root} adaptr ls", err=True)
    click.echo(f"evaluate it: ADAPTR_REGISTRY={registry.root} adaptr eval sft-v1 dpo-v1 "
               f"--data {registry.root.parent / 'preferences-heldout.jsonl'}", err=True)
    registry.close()


def register(cli) -> None:
    cli.add_command(demo_cmd)
