"""`adaptr push` and `adaptr pull`: versions to and from the Hugging Face Hub.

The token is read by huggingface_hub from HF_TOKEN or the stored login; there is deliberately no
--token option, so it never shows up in argv or shell history.
"""

from __future__ import annotations

import click

from .common import echo_json, pass_state


def register(cli: click.Group) -> None:
    cli.add_command(push)
    cli.add_command(pull)


@click.command()
@click.argument("ref")
@click.option("--repo", "repo_id", required=True, metavar="OWNER/NAME",
              help="Hub repo for this adapter name (created if missing); the version is tagged vN.")
@click.option("--private", is_flag=True,
              help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--with-parents", is_flag=True,
              help="Push the version's ancestors first, each to OWNER/<its name>.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_state
def push(state, ref, repo_id, private, with_parents, as_json):
    """Push an adapter version to the Hub as one commit tagged vN."""
    from .. import hub

    results = hub.push(state.registry, ref, repo_id, private=private, with_parents=with_parents)
    if as_json:
        echo_json(results)
        return
    for result in results:
        where = f"{result['repo']}@{result['tag']} (commit {result['commit'][:12]})"
        if result["status"] == "pushed":
            click.echo(f"pushed {result['ref']} to {where}")
        else:
            click.echo(f"{result['ref']} is already at {where}; nothing uploaded")


@click.command()
@click.argument("spec", metavar="OWNER/NAME[@vN|@REVISION]")
@click.option("--with-parents", is_flag=True, help="Pull the ancestors the version's lineage names too.")
@click.option("--name", default=None, help="Register the version under this adapter name.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_state
def pull(state, spec, with_parents, name, as_json):
    """Pull a version from the Hub, verify every file, and register it with its lineage."""
    from .. import hub

    results = hub.pull(state.registry, spec, with_parents=with_parents, name=name)
    if as_json:
        echo_json(results)
        return
    for result in results:
        if result["status"] == "present":
            click.echo(f"{result['repo']}@{result['revision']} is already registered as {result['ref']}")
        else:
            click.echo(f"pulled {result['repo']} (commit {result['commit'][:12]}) as {result['ref']}")
