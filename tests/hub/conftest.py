"""Hub tests: the real huggingface_hub client (in `adaptr` subprocesses) against tests/hubserver.py.

The server and its endpoint come from tests/conftest.py (``hub_server``, set up before anything
imports huggingface_hub).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import TOKEN


@pytest.fixture
def hub(hub_server):
    """The server, emptied; the test fails if the client called a route the server does not know."""
    hub_server.reset(token=TOKEN)
    yield hub_server
    assert not hub_server.unknown_routes, f"client called unknown routes: {hub_server.unknown_routes}"
    assert not hub_server.cdn_auth_headers, f"token sent off the Hub: {hub_server.cdn_auth_headers}"


@pytest.fixture
def hub_env(hub, tmp_path) -> dict:
    """Environment for `adaptr` subprocesses: online, this server, an isolated HF_HOME, the token."""
    return {
        "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "COLUMNS": "120",
    }


@pytest.fixture(scope="session")
def lora_sources(tiny_base_dir, tmp_path_factory) -> list[Path]:
    """Three different real PEFT LoRA directories on the tiny base (seeds 0, 1, 2)."""
    from lora_dirs import make_lora_dir

    root = tmp_path_factory.mktemp("loras")
    return [make_lora_dir(tiny_base_dir, root / f"lora{seed}", seed=seed) for seed in range(3)]
