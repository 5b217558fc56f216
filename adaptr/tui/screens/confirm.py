"""A modal that confirms an action, optionally with extra command-line options for it."""

from __future__ import annotations

import shlex

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class ConfirmScreen(ModalScreen[list[str] | None]):
    """Returns the extra options (a possibly empty list) on confirm, or None on cancel."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str, *, confirm_label: str = "Run",
                 options_placeholder: str | None = None, options_value: str = "",
                 danger: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label
        self.options_placeholder = options_placeholder
        self.options_value = options_value
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, id="confirm-body")
            if self.options_placeholder is not None:
                yield Input(self.options_value, placeholder=self.options_placeholder, id="confirm-options")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, variant="error" if self.danger else "primary",
                             id="confirm-ok")
                yield Button("Cancel", id="confirm-cancel")

    def on_mount(self) -> None:
        target = "#confirm-options" if self.options_placeholder is not None else "#confirm-ok"
        self.query_one(target).focus()

    @on(Button.Pressed, "#confirm-ok")
    @on(Input.Submitted, "#confirm-options")
    def _confirm(self) -> None:
        options = self.query("#confirm-options")
        text = options.first(Input).value if options else ""
        try:
            self.dismiss(shlex.split(text))
        except ValueError as exc:  # an unbalanced quote
            self.app.notify(f"cannot parse the options: {exc}", severity="error")

    @on(Button.Pressed, "#confirm-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
