"""One error family for the CLI and the TUI: what went wrong, and what to do about it."""

from __future__ import annotations


class AdaptrError(Exception):
    """Root of every error adaptr raises on purpose.

    ``message`` says what is wrong; ``hint`` says what the user can do. Front ends show both on
    one line (the CLI exits with code 2, the TUI shows a notification).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(AdaptrError):
    """The input is malformed: a bad name, a bad option, data that does not validate."""


class NotFoundError(AdaptrError):
    """A ref, base, run or file that does not exist."""


class ConflictError(AdaptrError):
    """The request contradicts what is recorded: a duplicate, a mismatched base or LoRA setting."""


class IntegrityError(AdaptrError):
    """Files on disk do not match their manifest."""


class MachineError(AdaptrError):
    """The machine cannot do what was asked (no CUDA for QLoRA, a missing library)."""
