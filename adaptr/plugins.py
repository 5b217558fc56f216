"""The plugin manager: every plugin loads through an entry point of group ``adaptr``; adaptr's
own (the built-ins) first, in BUILTIN_PLUGINS order, then outside ones.

``ADAPTR_LOAD_PLUGINS`` (comma-separated entry-point names, may be empty) restricts what loads.
``ADAPTR_EXTRA_PLUGINS`` (comma-separated importable module names) registers modules that have no
entry point, each under its module name: for trying a plugin out, and for the test suite's
test-only stages (detached runs are new processes, so an in-process registration would not reach
them).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConflictError, NotFoundError, UsageError

GROUP = "adaptr"
BUILTIN_PLUGINS = ("sft", "dpo", "grpo", "kto", "resume", "merge", "eval", "slurm")  # entry points of adaptr's own pyproject.toml
# Core modules with hookimpls (the executors; the `eval` stage that runs evaluators), always loaded.
_CORE_HOOK_MODULES = ("adaptr.executors", "adaptr.evals")

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)
_loaded = False
failed_plugins: dict[str, str] = {}  # entry-point name -> why it did not load


def _allowed() -> set[str] | None:
    raw = os.environ.get("ADAPTR_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Register built-ins, then outside entry points; safe to call many times."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    allowed = _allowed()
    for module_name in _CORE_HOOK_MODULES:
        pm.register(importlib.import_module(module_name), name=module_name)
    found = [ep for ep in importlib.metadata.entry_points(group=GROUP)
             if allowed is None or ep.name in allowed]
    # One mechanism for built-ins and outside plugins: entry points. Built-ins (adaptr's own
    # distribution) register first, so an outside package cannot take a built-in's name.
    ours = {ep.name: ep for ep in found if _distribution(ep) == "adaptr"}
    for name in BUILTIN_PLUGINS:
        if name in ours and pm.get_plugin(name) is None:
            pm.register(ours[name].load(), name=name)  # a broken built-in is a broken install: raise
    for ep in found:
        if pm.get_plugin(ep.name) is not None:
            continue  # pluggy's rule: a name registered first (the built-in) wins
        _register_entry_point(ep)
    for module_name in _extra_modules():
        if pm.get_plugin(module_name) is None:
            pm.register(_import_extra(module_name), name=module_name)
    return pm


def _distribution(ep) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _register_entry_point(ep) -> None:
    """Load an outside plugin; one that fails to import is skipped with a warning, so a broken
    install cannot take every adaptr command down with it (``adaptr plugins`` lists it)."""
    try:
        module = ep.load()
    except Exception as exc:  # whatever the plugin's import raises
        failed_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
        print(f"warning: plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
              f"{failed_plugins[ep.name]} (hint: reinstall it, or leave it out with ADAPTR_LOAD_PLUGINS)",
              file=sys.stderr)
        return
    pm.register(module, name=ep.name)


def _import_extra(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"ADAPTR_EXTRA_PLUGINS names {module_name!r}, which cannot be imported ({exc})",
                         "fix the module name, or add its directory to PYTHONPATH") from None


def _extra_modules() -> list[str]:
    raw = os.environ.get("ADAPTR_EXTRA_PLUGINS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def plugin_name(plugin: Any) -> str:
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


@dataclass
class _Collected:
    items: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)


def _collect(hook_name: str, what: str) -> _Collected:
    """Call a ``register_*`` hook on each plugin; two plugins claiming one name is an error."""
    load_plugins()
    collected = _Collected()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        owner = plugin_name(impl.plugin)

        def register(item, _owner=owner):
            name = item.name
            if name in collected.items:
                raise ConflictError(
                    f"{what} {name!r} is registered by two plugins: {collected.owners[name]} and {_owner}",
                    f"uninstall one of them, or restrict loading with ADAPTR_LOAD_PLUGINS")
            item.plugin = _owner
            collected.items[name] = item
            collected.owners[name] = _owner

        impl.function(register=register)
    return collected


def stages() -> dict:
    """Every registered stage, by name."""
    return _collect("register_stages", "stage").items


def get_stage(name: str):
    found = stages()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise NotFoundError(f"unknown stage {name!r} (installed: {known})",
                            "install the plugin that provides it; `adaptr plugins` lists what is loaded")
    return found[name]


def executors() -> dict:
    return _collect("register_executors", "executor").items


def get_executor(name: str):
    found = executors()
    if name not in found:
        raise NotFoundError(f"unknown executor {name!r} (installed: {', '.join(sorted(found))})",
                            "choose one of the installed executors")
    return found[name]


def evaluators() -> dict:
    """Every registered evaluator, by name."""
    return _collect("register_evaluators", "evaluator").items


def get_evaluator(name: str):
    found = evaluators()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise NotFoundError(f"unknown evaluator {name!r} (installed: {known})",
                            "install the plugin that provides it; `adaptr plugins` lists what is loaded")
    return found[name]


def describe() -> list[dict]:
    """One entry per loaded plugin: name, stages, executors, evaluators, hooks it implements."""
    load_plugins()
    stage_owner = {s.name: s.plugin for s in stages().values()}
    exec_owner = {e.name: e.plugin for e in executors().values()}
    eval_owner = {e.name: e.plugin for e in evaluators().values()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin()):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({
            "name": name,
            "module": getattr(plugin, "__name__", repr(plugin)),
            "stages": sorted(s for s, owner in stage_owner.items() if owner == name),
            "executors": sorted(e for e, owner in exec_owner.items() if owner == name),
            "evaluators": sorted(e for e, owner in eval_owner.items() if owner == name),
            "hooks": hooks,
        })
    out += [{"name": name, "module": None, "stages": [], "executors": [], "evaluators": [], "hooks": [],
             "error": error}
            for name, error in sorted(failed_plugins.items())]
    return out
