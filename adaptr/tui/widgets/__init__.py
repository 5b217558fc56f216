"""Widgets of the terminal UI, grouped by view."""
