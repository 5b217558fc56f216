"""The launch form: a modal built from the chosen stage's config dataclass.

Inputs (parent or base, mode, data, GPUs) come first, then one field per config key with its
help text. Only config values the user changed from the prefill are sent, so LoRA settings a
parent recorded are still inherited by the stage. Submitting calls ``jobs.submit`` in a worker;
the stage's own checks raise :class:`~adaptr.AdaptrError`, shown as a notification while the
form stays open.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from ... import config as config_mod
from ... import plugins
from ...errors import AdaptrError
from ...stages import MODES, StageRequest
from .. import backend

GROUP_TITLES = {"lora": "LoRA (inherited from the parent unless changed)", "": "Other"}
QUANTIZE_CHOICES = (("none", ""), ("4bit (QLoRA, CUDA only)", "4bit"))


@dataclass
class Prefill:
    """Where the form starts: the version or base selected when it was opened."""

    stage: str | None = None
    parent: str | None = None
    base: str | None = None
    parent_config: dict = dataclasses.field(default_factory=dict)
    config: dict = dataclasses.field(default_factory=dict)
    """Config values set on top of the defaults (sent even if the user leaves them)."""


class LaunchScreen(ModalScreen[dict | None]):
    """Returns the submitted run's row, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Launch")]

    def __init__(self, prefill: Prefill, bases: list[str], gpus: list[tuple[str, str]]) -> None:
        super().__init__()
        self.prefill = prefill
        # The stages `adaptr train` offers, plus the one an action asked for (merge's `m`).
        self.stages = {name: stage for name, stage in plugins.stages().items()
                       if stage.command == "train" or name == prefill.stage}
        self.executors = sorted(plugins.executors())
        self.bases = bases
        self.gpus = gpus
        self.stage_name = self._initial_stage()
        self._field_prefill: dict[str, Any] = {}

    def _initial_stage(self) -> str:
        if self.prefill.stage in self.stages:
            return self.prefill.stage
        return "sft" if "sft" in self.stages else next(iter(sorted(self.stages)), "")

    def compose(self) -> ComposeResult:
        with Vertical(id="launch-dialog"):
            yield Static("Launch a run", classes="dialog-title")
            with VerticalScroll(id="launch-form"):
                yield from self._common_fields()
                yield Static("Stage config", classes="section-title")
                yield Vertical(id="config-fields")
            yield Static("", id="field-help", classes="help")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Launch", variant="primary", id="launch-submit")
                yield Button("Cancel", id="launch-cancel")

    def _common_fields(self) -> ComposeResult:
        stage_options = [(f"{name} — {stage.help}" if stage.help else name, name)
                         for name, stage in sorted(self.stages.items())]
        yield from _row("stage", Select(stage_options, value=self.stage_name, allow_blank=False,
                                        id="f-stage"), "the plugin stage to run")
        yield from _row("from", Input(self.prefill.parent or "", placeholder="parent ref, e.g. sft-v2",
                                      id="f-parent"), "continue from this adapter version (optional)")
        base_options = [(name, name) for name in self.bases]
        base = self.prefill.base
        if base is None and not self.prefill.parent and len(self.bases) == 1:
            base = self.bases[0]  # the only choice
        yield from _row("base", Select(base_options, value=base or Select.NULL,
                                       prompt="(the parent's base)", id="f-base"),
                        "base model; leave blank to use the parent's")
        yield from _row("mode", Select([(m, m) for m in MODES], value="continue", allow_blank=False,
                                       id="f-mode"),
                        "with --from: continue the same adapter, merge the parent into a new base, "
                        "or stack a new adapter on top")
        yield from _row("name", Input(placeholder="default: the stage name", id="f-name"),
                        "adapter name of the new version")
        yield from _row("data", Input(placeholder="path to a JSONL/JSON/Parquet/CSV file", id="f-data"),
                        "training data")
        yield from _row("eval data", Input(placeholder="optional", id="f-eval-data"), "evaluation data")
        yield from _row("quantize", Select(QUANTIZE_CHOICES, value="", allow_blank=False, id="f-quantize"),
                        "load the base in 4-bit (QLoRA)")
        yield from _row("executor", Select([(e, e) for e in self.executors], value=self._executor(),
                                           allow_blank=False, id="f-executor"), "how the run is started")
        yield from _row("gpus", Select(self._gpu_options(), value="", allow_blank=False, id="f-gpus"),
                        "which devices the run may use")
        yield from _row("profile", Input(placeholder="SLURM profile (default: `default`, if any)", id="f-profile"),
                        "a profile from slurm.yaml beside the registry or in ~/.config/adaptr (docs/slurm.md)")

    def _executor(self) -> str:
        return "local" if "local" in self.executors else (self.executors[0] if self.executors else "")

    def _gpu_options(self) -> list[tuple[str, str]]:
        options = [("default (all visible; CPU if none)", "")]
        options += [(f"GPU {index}: {name}", index) for index, name in self.gpus]
        if len(self.gpus) > 1:
            options.append(("all GPUs", ",".join(index for index, _ in self.gpus)))
        return options

    async def on_mount(self) -> None:
        self._show_executor_options()
        await self._build_config_fields()
        stage = self.stages.get(self.stage_name)
        if not (self.prefill.parent or self.prefill.base):
            self.query_one("#f-stage").focus()
        elif stage is not None and stage.takes_data:
            self.query_one("#f-data").focus()
        else:
            self.query_one("#launch-submit").focus()

    def on_descendant_focus(self, event) -> None:
        tooltip = getattr(event.widget, "tooltip", None)
        self.query_one("#field-help", Static).update(tooltip if isinstance(tooltip, str) else "")

    # -- the stage's config fields ---------------------------------------------------------

    @on(Select.Changed, "#f-stage")
    async def _stage_changed(self, event: Select.Changed) -> None:
        if event.value != self.stage_name and isinstance(event.value, str):
            self.stage_name = event.value
            await self._build_config_fields()

    async def _build_config_fields(self) -> None:
        container = self.query_one("#config-fields", Vertical)
        await container.remove_children()
        stage = self.stages.get(self.stage_name)
        if stage is None:
            return
        lora_keys = set(config_mod.group_keys(stage.config_class, "lora"))
        widgets: list[Widget] = []
        for field in _grouped(config_mod.shown_fields(stage.config_class)):
            if isinstance(field, str):
                widgets.append(Static(field, classes="group-title"))
                continue
            value = config_mod.default_of(field)
            if field.name in lora_keys and field.name in self.prefill.parent_config:
                value = self.prefill.parent_config[field.name]
            widgets.extend(_row(field.name, _field_widget(stage.config_class, field, value),
                                config_mod.field_help(field)))
        if not widgets:
            widgets.append(Static("this stage has no config fields", classes="help field"))
        await container.mount_all(widgets)
        self._field_prefill = {f.name: self._field_value(f.name)
                               for f in config_mod.shown_fields(stage.config_class)}
        if stage.name == self.prefill.stage:
            for name, value in self.prefill.config.items():
                if name in self._field_prefill:
                    self._set_field_value(name, value)
        self._show_inputs_for(stage)

    def _set_field_value(self, name: str, value: Any) -> None:
        widget = self.query_one(f"#cfg-{name}")
        widget.value = value if isinstance(widget, Checkbox) else _as_form_value(value)

    @on(Select.Changed, "#f-executor")
    def _show_executor_options(self, event: Select.Changed | None = None) -> None:
        """The profile row only for the slurm executor."""
        self.query_one("#f-profile").parent.display = self.query_one("#f-executor", Select).value == "slurm"

    def executor_options(self) -> dict:
        """Options for the chosen executor (the slurm profile), as `adaptr train --profile` passes them."""
        profile = self.query_one("#f-profile", Input).value.strip()
        return {"profile": profile} if profile and self.query_one("#f-executor", Select).value == "slurm" else {}

    def _show_inputs_for(self, stage) -> None:
        """Hide the inputs a stage does not take (data for merge, base for parent-only stages)."""
        for selector in ("#f-data", "#f-eval-data"):
            self.query_one(selector).parent.display = stage.takes_data
        self.query_one("#f-quantize").parent.display = stage.takes_data
        self.query_one("#f-base").parent.display = stage.inputs != "parent"
        self.query_one("#f-mode").parent.display = stage.inputs == "base_or_parent"

    def _field_value(self, name: str) -> Any:
        widget = self.query_one(f"#cfg-{name}")
        value = widget.value
        return None if isinstance(widget, Select) and value is Select.NULL else value

    def _config_values(self) -> dict[str, Any]:
        """The config keys whose form value differs from its prefill."""
        return {name: value for name, prefilled in self._field_prefill.items()
                if (value := self._field_value(name)) != prefilled}

    # -- submitting ------------------------------------------------------------------------

    def build_request(self) -> tuple[StageRequest, str, str | None]:
        def text(selector: str) -> str | None:
            return self.query_one(selector, Input).value.strip() or None

        def choice(selector: str) -> str | None:
            value = self.query_one(selector, Select).value
            return value if isinstance(value, str) and value else None

        request = StageRequest(
            stage=self.stage_name, parent=text("#f-parent"), base=choice("#f-base"),
            mode=choice("#f-mode") or "continue", data=text("#f-data"), eval_data=text("#f-eval-data"),
            name=text("#f-name"), quantize=choice("#f-quantize"), config=self._config_values())
        return request, choice("#f-executor") or "local", choice("#f-gpus")

    @on(Button.Pressed, "#launch-submit")
    def action_submit(self) -> None:
        button = self.query_one("#launch-submit", Button)
        if button.disabled:
            return
        try:
            request, executor, gpus = self.build_request()
        except AdaptrError as exc:
            self.app.show_error(exc)
            return
        button.disabled = True
        button.label = "Launching…"
        self.run_worker(partial(backend.submit, self.app.registry.db_path, request,
                                executor=executor, gpus=gpus, options=self.executor_options()),
                        thread=True, exit_on_error=False, group="submit", name="submit")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "submit" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        event.stop()
        if event.state == WorkerState.SUCCESS:
            self.dismiss(event.worker.result)
            return
        button = self.query_one("#launch-submit", Button)
        button.disabled = False
        button.label = "Launch"
        self.app.show_error(event.worker.error)

    @on(Button.Pressed, "#launch-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def _row(label: str, widget: Widget, help_text: str) -> ComposeResult:
    """One compact line: the name, then the input; its help shows in the bar when focused."""
    widget.tooltip = help_text or None
    if hasattr(widget, "compact"):
        widget.compact = True
    yield Horizontal(Label(label, classes="field-label"), widget, classes="field")


def _grouped(fields: list[dataclasses.Field]) -> list[dataclasses.Field | str]:
    """Fields ordered by their ``group`` metadata, each group led by its title (if any groups)."""
    groups: dict[str, list[dataclasses.Field]] = {}
    for field in fields:
        groups.setdefault(field.metadata.get("group") or "", []).append(field)
    if len(groups) == 1:
        return fields
    out: list[dataclasses.Field | str] = []
    for group, members in groups.items():
        out.append(GROUP_TITLES.get(group, group.replace("_", " ").capitalize() or "Other"))
        out.extend(members)
    return out


def _as_form_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value if value is not None else ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _field_widget(config_class: type, field: dataclasses.Field, value: Any) -> Widget:
    widget_id = f"cfg-{field.name}"
    choices = field.metadata.get("choices")
    if choices:
        options = [(str(c), str(c)) for c in choices]
        current = str(value) if value is not None else Select.NULL
        return Select(options, value=current, allow_blank=value is None, id=widget_id)
    if config_mod.field_type(config_class, field) is bool:
        return Checkbox("", value=bool(value), id=widget_id)
    return Input(_as_form_value(value), placeholder="not set", id=widget_id)
