"""`adaptr tui`: open the terminal UI on the registry."""

from __future__ import annotations

import click

from .common import pass_state


@click.command("tui")
@pass_state
def tui(state):
    """Browse the registry and its lineage, launch and watch runs."""
    from ..tui import make_app

    registry_path = state.registry.db_path
    state.close()  # the app opens its own connection
    make_app(registry_path).run()


def register(cli: click.Group) -> None:
    cli.add_command(tui)
