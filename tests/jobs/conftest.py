"""Fixtures for runs as jobs: the test-only `testloop` stage, in this process and in detached ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent / "testplugins"
PLUGIN = "adaptr_testloop"


@pytest.fixture
def testloop(monkeypatch):
    """Make stage `testloop` available here and to every process a test starts."""
    from adaptr import plugins

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ADAPTR_EXTRA_PLUGINS", PLUGIN)
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    plugins.load_plugins()
    if plugins.pm.get_plugin(PLUGIN) is None:
        import adaptr_testloop

        plugins.pm.register(adaptr_testloop, name=PLUGIN)
    yield
    plugins.pm.unregister(name=PLUGIN)


@pytest.fixture
def loop_registry(registry, testloop, tmp_path):
    """A registry with a stand-in base `toy` (the testloop stage loads no model)."""
    registry.add_base("toy", source="test", source_kind="local")
    return registry
