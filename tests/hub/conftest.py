"""Hub tests: the real huggingface_hub client (in `adaptr` subprocesses) against tests/hubserver.py.

The endpoint is fixed here, before anything in this process imports huggingface_hub: a listening
socket is reserved now and handed to the server when the first test needs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubserver import HubServer, reserve_socket  # noqa: E402

from .helpers import TOKEN  # noqa: E402

_SOCKET = reserve_socket()
ENDPOINT = f"http://127.0.0.1:{_SOCKET.getsockname()[1]}"
os.environ["HF_ENDPOINT"] = ENDPOINT
os.environ["HF_HUB_DISABLE_XET"] = "1"


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hubserver"), token=TOKEN, sock=_SOCKET).start()
    yield server
    server.stop()


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
