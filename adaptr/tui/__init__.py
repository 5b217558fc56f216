"""The Textual terminal UI (``adaptr tui``). Importing it never imports torch."""

from .app import AdaptrApp, make_app

__all__ = ["AdaptrApp", "make_app"]
