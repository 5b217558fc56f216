"""`adaptr adopt`: a thin click command over adopt.adopt."""

from __future__ import annotations

import json

import click

from adaptr import config as config_mod
from adaptr.cli import pass_state


@click.command("adopt")
@click.argument("output_dir", metavar="OUTPUT_DIR")
@click.option("--base", required=True, help="The registered base the run trained on.")
@click.option("--stage", "stage_name", default="sft", show_default=True,
              help="The adaptr stage with the run's TRL trainer (sft: SFTTrainer, dpo: DPOTrainer...).")
@click.option("--data", required=True, metavar="FILE", help="The run's training data file.")
@click.option("--name", default=None, help="Name of the version the resumed run publishes (default: the stage).")
@click.option("--save-steps", type=int, default=None,
              help="Checkpoint every N steps when resumed (default: as trainer_state.json says).")
@click.option("--config", "config_file", metavar="YAML", help="The run's settings, with the stage's keys.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A setting of the run (repeatable): the ones its checkpoints do not record, such as "
                   "seed, gradient_accumulation_steps, lr_scheduler_type, warmup_steps, max_length.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON on stdout.")
@pass_state
def adopt_cmd(state, output_dir, base, stage_name, data, name, save_steps, config_file, sets, as_json):
    """Register a plain TRL run's OUTPUT_DIR (its checkpoint-N folders) as an interrupted run.

    The checkpoints are verified and copied into the registry; `adaptr resume RUN` then continues
    the run from the newest, exactly as TRL's resume_from_checkpoint would. LoRA settings come
    from adapter_config.json, max_steps, logging_steps, the batch size, learning rate and weight
    decay from the checkpoint; give the others as the run had them. The pickled
    training_args.bin is never opened.
    """
    from .adopt import adopt

    settings = config_mod.load_yaml(config_file) if config_file else {}
    settings.update(config_mod.parse_sets(list(sets)))
    run = adopt(state.registry, output_dir, base=base, stage=stage_name, data=data, name=name,
                config=settings, save_steps=save_steps)
    steps = [c["step"] for c in state.registry.checkpoints(run["id"])]
    if as_json:
        click.echo(json.dumps({"run": run["id"], "status": run["status"], "checkpoints": sorted(steps),
                               "stage": run["stage"], "base": base}, indent=2))
    else:
        click.echo(run["id"])
    click.echo(f"adopted {output_dir} as run {run['id']} ({run['stage']} on {base}): checkpoints at steps "
               f"{', '.join(map(str, sorted(steps)))} of {run['progress_total']}; continue it with "
               f"`adaptr resume {run['id']}`", err=True)


def register(cli) -> None:
    cli.add_command(adopt_cmd)
