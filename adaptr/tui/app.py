"""The adaptr terminal UI: adapters, bases and runs views over one registry.

Built by :func:`make_app`, which tests reuse. Background work (polling runs, submitting jobs,
push and merge commands) runs in worker threads that only post messages; an
:class:`~adaptr.AdaptrError` anywhere becomes a notification, never a crash. Nothing here
imports torch: stages run in their own processes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterable

from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from ..entities import ACTIVE_STATUSES, RESUMABLE_STATUSES
from ..errors import AdaptrError, ConflictError, IntegrityError, MachineError, NotFoundError, UsageError
from ..registry import Registry
from . import backend
from .commands import RegistryProvider
from .screens.adapters import AdaptersScreen
from .screens.bases import BasesScreen
from .screens.confirm import ConfirmScreen
from .screens.launch import LaunchScreen, Prefill
from .screens.runs import RunsScreen

ERROR_TITLES = {UsageError: "invalid input", NotFoundError: "not found", ConflictError: "conflict",
                MachineError: "not possible here", IntegrityError: "integrity error"}
POLL_INTERVAL_S = 1.0
# With no run active and the Runs view hidden, poll only every this many intervals.
IDLE_POLL_EVERY = 5


class RunsUpdated(Message):
    """A fresh poll of the runs table (at most one in flight, so they cannot pile up)."""

    def __init__(self, snapshot: backend.RunsSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class AdaptrApp(App):
    CSS_PATH = "adaptr.tcss"
    TITLE = "adaptr"
    VIEWS = {"adapters": AdaptersScreen, "bases": BasesScreen, "runs": RunsScreen}
    COMMANDS = App.COMMANDS | {RegistryProvider}
    BINDINGS = [
        Binding("1", "switch_mode('adapters')", "Adapters"),
        Binding("2", "switch_mode('bases')", "Bases"),
        Binding("3", "switch_mode('runs')", "Runs"),
        Binding("f5", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, registry_path: Path | str, *, poll_interval: float = POLL_INTERVAL_S) -> None:
        super().__init__()
        self.registry = Registry(registry_path)
        self.sub_title = str(self.registry.root)
        self.poll_interval = poll_interval
        self.runs_snapshot: backend.RunsSnapshot | None = None
        self.tail_run_id: str | None = None
        self._run_status: dict[str, str] = {}
        self._polling = False
        self._poll_error: str | None = None
        self._ticks = 0
        self._gpus: list[tuple[str, str]] | None = None
        self.views: dict[str, Screen] = {}
        for mode, screen_class in self.VIEWS.items():
            self.add_mode(mode, partial(self._make_view, mode, screen_class))

    def _make_view(self, mode: str, screen_class: type[Screen]) -> Screen:
        self.views[mode] = screen_class()
        return self.views[mode]

    def on_mount(self) -> None:
        self.switch_mode("adapters")
        self.set_interval(self.poll_interval, self._tick)
        self.poll_runs_now()

    def on_unmount(self) -> None:
        self.registry.close()

    # -- errors ----------------------------------------------------------------------------

    def show_error(self, exc: BaseException | None) -> None:
        """Show an error as a notification: what went wrong, and the hint that fixes it."""
        if isinstance(exc, AdaptrError):
            text = exc.message + (f"\n{exc.hint}" if exc.hint else "")
            title = next((t for cls, t in ERROR_TITLES.items() if isinstance(exc, cls)), "error")
            self.notify(text, title=title, severity="error", timeout=10)
        else:
            self.notify(f"{type(exc).__name__}: {exc}", title="unexpected error", severity="error",
                        timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "poll" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED,
                                                            WorkerState.SUCCESS):
            self._polling = False
            if event.state == WorkerState.ERROR:
                # The poll repeats every second: show a failure once, not once a second.
                text = str(event.worker.error)
                if text != self._poll_error:
                    self.show_error(event.worker.error)
                self._poll_error = text
                return
            self._poll_error = None
        if event.state == WorkerState.ERROR:
            self.show_error(event.worker.error)

    @property
    def active_screen(self) -> Screen | None:
        """The screen on top, or None while the app starts or shuts down."""
        try:
            return self.screen
        except ScreenStackError:
            return None

    # -- runs polling ----------------------------------------------------------------------

    def _tick(self) -> None:
        self._ticks += 1
        active = any(s in ACTIVE_STATUSES for s in self._run_status.values())
        if active or isinstance(self.active_screen, RunsScreen) or self._ticks % IDLE_POLL_EVERY == 0:
            self.poll_runs_now()

    def poll_runs_now(self) -> None:
        if self._polling:
            return  # the poll in flight will bring fresh data; never queue a second one
        self._polling = True
        self.run_worker(self._poll, thread=True, exit_on_error=False, group="poll", name="poll runs")

    def _poll(self) -> None:
        snapshot = backend.poll_runs(self.registry.db_path, self.tail_run_id)
        self.post_message(RunsUpdated(snapshot))

    def on_runs_updated(self, message: RunsUpdated) -> None:
        snapshot = message.snapshot
        self.runs_snapshot = snapshot
        self._announce_changes(snapshot.runs)
        screen = self.active_screen
        if isinstance(screen, RunsScreen):
            screen.apply(snapshot)

    def _announce_changes(self, runs: list[dict]) -> None:
        published = False
        for run in runs:
            before = self._run_status.get(run["id"])
            self._run_status[run["id"]] = run["status"]
            if before is None or before == run["status"] or run["status"] in ACTIVE_STATUSES:
                continue
            if run["status"] == "succeeded":
                output = f": published {run['output_ref']}" if run.get("output_ref") else ""
                self.notify(f"run {run['id']} succeeded{output}", title="run finished")
                published = published or bool(run.get("output_ref"))
            else:
                error = f": {run['error']}" if run.get("error") else ""
                self.notify(f"run {run['id']} {run['status']}{error}", title="run ended",
                            severity="error" if run["status"] == "failed" else "warning", timeout=10)
        if published:
            self.refresh_views()

    # -- navigation ------------------------------------------------------------------------

    def _mode_screen(self, mode: str) -> Screen:
        self.switch_mode(mode)
        return self.screen

    def show_adapter(self, ref: str) -> None:
        screen = self._mode_screen("adapters")
        if isinstance(screen, AdaptersScreen):
            screen.select_ref(ref)

    def show_base(self, name: str) -> None:
        screen = self._mode_screen("bases")
        if isinstance(screen, BasesScreen):
            screen.select_base(name)

    def show_adapters_of_base(self, name: str) -> None:
        screen = self._mode_screen("adapters")
        if isinstance(screen, AdaptersScreen):
            screen.set_filter(f"base:{name}")

    def show_run(self, run_id: str) -> None:
        self.tail_run_id = run_id
        screen = self._mode_screen("runs")
        if isinstance(screen, RunsScreen) and not screen.select_run(run_id):
            screen.selected_id = run_id  # selected once the next poll brings it
        self.poll_runs_now()

    def refresh_views(self) -> None:
        """Re-read the registry in every view that has been opened."""
        for mode in ("adapters", "bases"):
            screen = self.views.get(mode)
            if isinstance(screen, AdaptersScreen):
                screen.reload(keep_selection=True)
            elif isinstance(screen, BasesScreen):
                screen.reload()
        self.poll_runs_now()

    def action_refresh(self) -> None:
        self.refresh_views()

    # -- the selection ---------------------------------------------------------------------

    def selected_adapter(self) -> dict | None:
        screen = self.screen
        return screen.selected if isinstance(screen, AdaptersScreen) else None

    def selected_base(self) -> dict | None:
        screen = self.screen
        if isinstance(screen, BasesScreen):
            return screen.selected
        return None

    # -- actions ---------------------------------------------------------------------------

    def action_launch(self) -> None:
        adapter, base = self.selected_adapter(), self.selected_base()
        self.open_launch(Prefill(stage=adapter["stage"] if adapter else None,
                                  parent=adapter["ref"] if adapter else None,
                                  base=base["name"] if base else None,
                                  parent_config=(adapter.get("config") or {}) if adapter else {}))

    def open_launch(self, prefill: Prefill) -> None:
        if self._gpus is None:
            self._gpus = backend.detect_gpus()
        try:
            screen = LaunchScreen(prefill, [b["name"] for b in self.registry.bases()], self._gpus)
        except Exception as exc:  # a broken plugin must not take the app down
            self.show_error(exc)
            return
        self.push_screen(screen, self._launched)

    def _launched(self, run: dict | None) -> None:
        if run:
            self.notify(f"run {run['id']} started ({run['stage']})", title="launched")
            self.show_run(run["id"])

    def action_push(self) -> None:
        adapter = self._require_adapter("push")
        if adapter:
            repo = adapter.get("hub_repo") or ""
            self.push_screen(
                ConfirmScreen(f"Push {adapter['ref']} to the Hugging Face Hub",
                              f"Runs: adaptr push {adapter['ref']} --repo OWNER/NAME [options]\n"
                              "The token comes from HF_TOKEN or your stored Hub login.",
                              confirm_label="Push", options_value=f"--repo {repo}",
                              options_placeholder="--repo OWNER/NAME [--private] [--with-parents]"),
                partial(self._run_core, "push", adapter["ref"], then=self._pushed))

    def action_merge(self) -> None:
        """Merge the selected version into its base: the merge stage's form, run detached."""
        adapter = self._require_adapter("merge")
        if adapter:
            self.open_launch(Prefill(stage="merge", parent=adapter["ref"], config={"into_base": True}))

    def _require_adapter(self, what: str) -> dict | None:
        adapter = self.selected_adapter()
        if adapter is None:
            self.notify(f"select an adapter version in the Adapters view to {what} it", severity="warning")
        return adapter

    def _run_core(self, command: str, target: str, options: list[str] | None, then) -> None:
        """Do ``adaptr COMMAND TARGET OPTIONS`` through the core in a worker (None: cancelled)."""
        if options is None:
            return
        call = {"push": backend.push, "resume": backend.resume}[command]
        shown = " ".join(["adaptr", command, target, *(["--detach"] if command == "resume" else []), *options])
        self.notify(f"{shown} …", title="running")
        self.run_worker(partial(self._core_worker, call, target, options, shown, then), thread=True,
                        exit_on_error=False, group="core")

    def _core_worker(self, call, target: str, options: list[str], shown: str, then) -> None:
        try:
            result = call(self.registry.db_path, target, options)
        except AdaptrError as exc:
            self.call_from_thread(self.notify, exc.message + (f"\n{exc.hint}" if exc.hint else ""),
                                  title=f"{shown}: failed", severity="error", timeout=10)
            return
        self.call_from_thread(self._core_done, result, shown, then)

    def _core_done(self, result, shown: str, then) -> None:
        self.notify(then(result), title=f"{shown}: done")
        self.refresh_views()

    def action_cancel_run(self) -> None:
        screen = self.screen
        run = screen.selected_run if isinstance(screen, RunsScreen) else None
        if run is None or run["status"] not in ACTIVE_STATUSES:
            self.notify("select a queued or running run in the Runs view to cancel it", severity="warning")
            return
        self.push_screen(
            ConfirmScreen(f"Cancel run {run['id']}?",
                          "The run is asked to stop (SIGTERM): it saves a checkpoint and ends cancelled.",
                          confirm_label="Cancel run", danger=True),
            partial(self._cancel_confirmed, run["id"]))

    def action_resume_run(self) -> None:
        screen = self.screen
        run = screen.selected_run if isinstance(screen, RunsScreen) else None
        if run is None or run["status"] not in RESUMABLE_STATUSES:
            self.notify("select an interrupted, cancelled or failed run in the Runs view to resume it",
                        severity="warning")
            return
        self.push_screen(
            ConfirmScreen(f"Resume run {run['id']}",
                          f"Runs: adaptr resume {run['id']} --detach [options]\n"
                          "It continues from the newest checkpoint that verifies, as a new run.",
                          confirm_label="Resume",
                          options_placeholder="e.g. --checkpoint STEP, --inexact, --set KEY=VALUE"),
            partial(self._run_core, "resume", run["id"], then=self._resumed))

    def _pushed(self, results: list[dict]) -> str:
        return "; ".join(f"{r['ref']} {'pushed to' if r['status'] == 'pushed' else 'already at'} "
                         f"{r['repo']}@{r['tag']}" for r in results)

    def _resumed(self, run: dict) -> str:
        self.show_run(run["id"])
        return f"resuming as run {run['id']}"

    def _cancel_confirmed(self, run_id: str, options: list[str] | None) -> None:
        if options is None:
            return
        self.run_worker(partial(backend.cancel, self.registry.db_path, run_id), thread=True,
                        exit_on_error=False, group="cancel")
        self.notify(f"asked run {run_id} to stop", title="cancel")
        self.poll_runs_now()

    # -- command palette -------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Adapters view", "Browse adapter versions (1)",
                            partial(self.switch_mode, "adapters"))
        yield SystemCommand("Bases view", "Browse base models (2)", partial(self.switch_mode, "bases"))
        yield SystemCommand("Runs view", "Watch runs, their progress and logs (3)",
                            partial(self.switch_mode, "runs"))
        yield SystemCommand("Launch a run", "Open the launch form for any stage (n)", self.action_launch)
        yield SystemCommand("Push selected version", "adaptr push REF to the Hub (p)", self.action_push)
        yield SystemCommand("Merge selected version into its base", "The merge stage with into_base (m)",
                            self.action_merge)
        yield SystemCommand("Cancel selected run", "Send SIGTERM to the run (c)", self.action_cancel_run)
        yield SystemCommand("Resume selected run", "adaptr resume RUN --detach (r)", self.action_resume_run)
        yield SystemCommand("Refresh", "Re-read the registry (F5)", self.action_refresh)


def make_app(registry_path: Path | str, **kwargs) -> AdaptrApp:
    """The app over the registry at ``registry_path`` (a directory or its adaptr.db)."""
    return AdaptrApp(Registry.locate(registry_path), **kwargs)
