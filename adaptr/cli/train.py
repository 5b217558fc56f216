"""`adaptr train STAGE`: one subcommand per registered stage, its options built from the stage's
config dataclass (one ``--kebab-case`` option per field, help from the field's metadata).

Layering, lowest first: the dataclass defaults, the parent's LoRA settings, ``--config`` YAML,
then flags and ``--set key=value``.
"""

from __future__ import annotations

import dataclasses
import sys

import click

from .. import config as config_mod
from .. import plugins
from ..errors import UsageError
from ..stages import MODES, StageRequest
from .common import RichReporter, echo_json, pass_state

# YAML keys that fill the request itself rather than the stage config.
REQUEST_KEYS = {"base": "base", "from": "parent", "parent": "parent", "mode": "mode", "data": "data",
                "eval_data": "eval_data", "eval_fraction": "eval_fraction", "name": "name",
                "quantize": "quantize", "save_steps": "save_steps"}


class StageGroup(click.Group):
    """Subcommands are the registered stages, built when first asked for (keeps --help fast)."""

    def list_commands(self, ctx):
        return sorted(trainable_stages())

    def get_command(self, ctx, name):
        stage = trainable_stages().get(name)
        return build_stage_command(stage) if stage else None


def trainable_stages() -> dict:
    """Stages run through `adaptr train` (resume and merge have commands of their own)."""
    return {name: s for name, s in plugins.stages().items() if s.command == "train"}


# executor option key -> the command's parameter (the slurm executor's options; others refuse them)
_SCHEDULER_OPTIONS = {"nodes": "nodes", "gpus_per_node": "gpus_per_node", "time": "time_limit",
                      "partition": "partition", "account": "account", "qos": "qos", "profile": "profile"}


def _common_options(func):
    options = [
        click.option("--base", help="Base model name to train a new adapter on."),
        click.option("--from", "parent", metavar="REF", help="Parent adapter version to start from (e.g. sft-v1)."),
        click.option("--mode", type=click.Choice(MODES), default=None,
                     help="How to use --from: continue the same adapter (default), merge it into a "
                          "derived base, or stack a new adapter on top."),
        click.option("--data", metavar="FILE", help="Training data: JSONL, JSON, Parquet, CSV or a saved dataset dir."),
        click.option("--eval-data", metavar="FILE", help="Evaluation data in the same format."),
        click.option("--eval-fraction", type=float, help="Hold out this fraction of --data for evaluation."),
        click.option("--name", help="Adapter name for the new version (default: the stage name)."),
        click.option("--config", "config_file", metavar="YAML", help="Recipe file with the same keys as the options."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set any config key (repeatable)."),
        click.option("--quantize", type=click.Choice(["4bit"]), help="QLoRA: load the base in 4-bit NF4 (CUDA only)."),
        click.option("--save-steps", type=int, help="Save a resumable checkpoint every N steps."),
        click.option("--json", "as_json", is_flag=True, help="Print the run as JSON on stdout."),
        click.option("--dry-run", is_flag=True,
                     help="Run every check (data, settings, inputs) and print the plan; train nothing."),
        click.option("--detach", is_flag=True, help="Run as a background job; print its run id."),
        click.option("--gpus", help="GPU devices for a detached run, e.g. 0,1."),
        click.option("--executor", default=None, help="Executor for a detached run (default: local)."),
        click.option("--processes", type=int, help="Processes for a multi-process executor (accelerate)."),
        click.option("--nodes", type=int, help="Nodes for --executor slurm."),
        click.option("--gpus-per-node", type=int, help="GPUs per node for --executor slurm (one rank each)."),
        click.option("--time", "time_limit", metavar="TIME", help="SLURM time limit, e.g. 4:00:00 (--executor slurm)."),
        click.option("--partition", help="SLURM partition (--executor slurm)."),
        click.option("--account", help="SLURM account (--executor slurm)."),
        click.option("--qos", help="SLURM quality of service (--executor slurm)."),
        click.option("--profile", metavar="NAME", help="SLURM profile from slurm.yaml beside the registry or "
                                                       "in ~/.config/adaptr (--executor slurm)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _field_option(config_class: type, field: dataclasses.Field):
    tp = config_mod.field_type(config_class, field)
    flag = "--" + field.name.replace("_", "-")
    default = config_mod.default_of(field)
    help_text = field.metadata.get("help", "")
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    if shown is not None:
        help_text += f"  [default: {shown}]"
    if field.metadata.get("group") == "lora":
        help_text += "  (inherited from --from when not given)"
    if tp is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text)
    click_type = {int: int, float: float}.get(tp, str)
    is_list = tp is list or getattr(tp, "__origin__", None) is list
    if is_list and field.metadata.get("repeatable"):  # --reward a --reward b (or --reward a,b)
        return click.option(flag, field.name, multiple=True, callback=_joined, help=help_text + "  (repeatable)",
                            metavar=field.metadata.get("metavar", "VALUE"))
    return click.option(flag, field.name, type=click_type, default=None, help=help_text,
                        metavar="LIST" if is_list else None)


def _joined(ctx, param, values: tuple) -> str | None:
    """A repeated option as the one comma-separated list the config parses (None: not given)."""
    return ",".join(values) if values else None


def build_stage_command(stage) -> click.Command:
    config_fields = config_mod.shown_fields(stage.config_class)
    reserved = {"base", "parent", "mode", "data", "eval_data", "eval_fraction", "name", "config_file",
                "sets", "quantize", "save_steps", "as_json", "dry_run", "detach", "gpus", "executor",
                "processes", *_SCHEDULER_OPTIONS.values()}

    @pass_state
    def command(state, **params):
        field_values = {f.name: params.pop(f.name) for f in config_fields if f.name not in reserved}
        run_train(state, stage, params, field_values)

    for field in reversed([f for f in config_fields if f.name not in reserved]):
        command = _field_option(stage.config_class, field)(command)
    command = _common_options(command)
    return click.command(stage.name, help=stage.help or f"Run stage {stage.name}.", epilog=_epilog(stage),
                         context_settings={"show_default": False})(command)


def _epilog(stage) -> str | None:
    """How to set what the options above do not show: every field of the trainer's own config."""
    if not stage.passthrough:
        return None
    name = stage.passthrough if isinstance(stage.passthrough, str) else stage.passthrough.__qualname__
    return (f"Every other field of {name.replace(':', '.')} can be set too, with --set KEY=VALUE or in the "
            "--config YAML (e.g. --set neftune_noise_alpha=5, --set save_total_limit=3, --set report_to=tensorboard); "
            "TRL validates them before training starts. adaptr sets output_dir, save_strategy (--save-steps) "
            "and the other run-management fields itself.")


def build_request(stage, params: dict, field_values: dict) -> StageRequest:
    """The request from YAML (lowest), then options and --set (highest)."""
    yaml_layer = config_mod.load_yaml(params["config_file"]) if params.get("config_file") else {}
    request_fields: dict = {}
    config_layer: dict = {}
    for key, value in yaml_layer.items():
        if key in REQUEST_KEYS:
            request_fields[REQUEST_KEYS[key]] = value
        else:
            config_mod.coerce_any(stage.config_class, stage.passthrough, key, value)  # unknown: refused
            config_layer[key] = value
    for key in ("base", "parent", "mode", "data", "eval_data", "eval_fraction", "name", "quantize",
                "save_steps"):
        if params.get(key) is not None:
            request_fields[key] = params[key]
    config_layer.update({k: v for k, v in field_values.items() if v is not None})
    for key, value in config_mod.parse_sets(list(params.get("sets") or ())).items():
        config_layer[key] = value
    config_layer = {k: config_mod.coerce_any(stage.config_class, stage.passthrough, k, v)
                    for k, v in config_layer.items()}
    if request_fields.get("mode") and not request_fields.get("parent"):
        raise UsageError(f"--mode {request_fields['mode']} needs --from REF",
                         "name the parent adapter, e.g. --from sft-v1")
    request_fields.setdefault("mode", "continue")
    return StageRequest(stage=stage.name, config=config_layer, **request_fields)


def run_train(state, stage, params: dict, field_values: dict) -> None:
    from .. import stages

    request = build_request(stage, params, field_values)
    registry = state.registry
    if params.get("dry_run"):
        _dry_run(stages.prepare(registry, request), params.get("as_json"))
        return
    if any(params.get(k) for k in ("detach", "gpus", "executor", "processes", *_SCHEDULER_OPTIONS.values())):
        _submit(registry, request, params)
        return
    reporter = RichReporter()
    ctx = stages.prepare(registry, request, reporter)
    print_config(ctx)
    run = stages.record_run(ctx)
    try:
        run = stages.execute(ctx, run)
    finally:
        reporter.finish()
    _report_run(run, params.get("as_json"))
    if run["status"] == "cancelled":
        sys.exit(130)


def _submit(registry, request: StageRequest, params: dict) -> None:
    try:
        from .. import jobs
    except ImportError:
        raise UsageError("--detach needs adaptr's job support, which is not installed",
                         "run in the foreground (drop --detach)") from None
    options = {"processes": params["processes"]} if params.get("processes") else {}
    options.update({key: params[param] for key, param in _SCHEDULER_OPTIONS.items()
                    if params.get(param) is not None})
    run = jobs.submit(registry, request, executor=params.get("executor") or "local",
                      gpus=params.get("gpus"), options=options)
    if params.get("as_json"):
        echo_json(run)
    else:
        click.echo(run["id"])
        click.echo(f"started run {run['id']} ({request.stage}); follow it with `adaptr runs`", err=True)


def _dry_run(ctx, as_json: bool) -> None:
    """What `adaptr train` would do: every check has passed, nothing was written."""
    plan = {"stage": ctx.stage.name, "name": ctx.default_name(), "base": ctx.base["name"],
            "parent": ctx.parent["ref"] if ctx.parent else None,
            "mode": ctx.mode if ctx.parent else None, "data": ctx.request.data,
            "inputs": [n["ref"] for n in ctx.inputs], "config": config_mod.to_dict(ctx.config),
            "warnings": ctx.warnings}
    if as_json:
        echo_json(plan)
        return
    print_config(ctx)
    click.echo(f"checks passed: would train {plan['name']} on {plan['base']} reading "
               f"{', '.join(plan['inputs'])}; nothing was written (drop --dry-run to train)", err=True)


def print_config(ctx) -> None:
    """The effective config, on stderr (stdout carries data)."""
    request = ctx.request
    source = f"--from {ctx.parent['ref']} --mode {request.mode}" if ctx.parent else f"--base {ctx.base['name']}"
    data = f" --data {request.data}" if request.data else ""
    lines = [f"adaptr train {ctx.stage.name} {source}{data}"]
    for key, value in config_mod.to_dict(ctx.config).items():
        marker = "*" if key in request.config else " "
        lines.append(f"  {marker} {key}: {value}")
    lines.append("  (* given by you; the rest are defaults or inherited from the parent)")
    click.echo("\n".join(lines), err=True)


def _report_run(run: dict, as_json: bool) -> None:
    if as_json:
        echo_json(run)
        return
    if run.get("output_ref"):
        click.echo(run["output_ref"])
    click.echo(f"run {run['id']} {run['status']}", err=True)


@click.group("train", cls=StageGroup)
def train_group():
    """Train an adapter with a stage: `adaptr train sft --base NAME --data FILE`."""


def register(cli) -> None:
    cli.add_command(train_group)
