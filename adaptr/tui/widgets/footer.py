"""The key-binding footer, recomposed once per burst of binding changes."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """Textual's Footer, except that a burst of binding changes costs at most two recomposes.

    Focus moves and screen changes each signal new bindings, and the stock Footer queues a full
    recompose for every signal: at start-up that was a third of the app's CPU time. Here a
    signal that arrives while a recompose is queued only marks it to be redone once afterwards.
    """

    _queued = False
    _missed = False

    def bindings_changed(self, screen: Screen) -> None:
        if self._queued:
            self._missed = True
            return
        super().bindings_changed(screen)
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._queued = True
            self.call_after_refresh(self._recomposed)

    def _recomposed(self) -> None:
        self._queued = False
        if self._missed and self.is_attached:
            self._missed = False
            self.bindings_changed(self.screen)
