"""A loss curve drawn with Textual's Sparkline, with its range and end points in words."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static


class LossPlot(Vertical):
    """Loss by step: a multi-row sparkline and a caption (first → last, min, steps)."""

    DEFAULT_CSS = """
    LossPlot { height: auto; }
    LossPlot Sparkline { height: 6; margin: 0 1; }
    LossPlot > .caption { height: auto; color: $text-muted; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", classes="caption")
        yield Sparkline([], summary_function=lambda values: sum(values) / len(values))

    def plot(self, points: list[tuple[int, float]], name: str = "loss") -> None:
        caption = self.query_one(".caption", Static)
        sparkline = self.query_one(Sparkline)
        if not points:
            caption.update(f"no {name} curve recorded for this version")
            sparkline.data = []
            sparkline.display = False
            return
        values = [value for _, value in points]
        first_step, last_step = points[0][0], points[-1][0]
        caption.update(
            f"{name} {values[0]:.4f} → {values[-1]:.4f}   min {min(values):.4f}   "
            f"max {max(values):.4f}   steps {first_step}–{last_step} ({len(values)} points)")
        sparkline.display = True
        sparkline.data = values
