"""Shared fixtures: a fresh registry per test and one generated tiny base per session."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

# The local Hub server's endpoint is fixed before anything in this process imports
# huggingface_hub (which reads HF_ENDPOINT once): a listening socket is reserved now and handed
# to the server when the first test needs it. Shared by tests/hub and tests/conformance.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubserver import HubServer, reserve_socket  # noqa: E402

HUB_TOKEN = "hf_adaptrtest" + secrets.token_hex(12)
_HUB_SOCKET = reserve_socket()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_HUB_SOCKET.getsockname()[1]}"
os.environ["HF_HUB_DISABLE_XET"] = "1"


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hubserver"), token=HUB_TOKEN, sock=_HUB_SOCKET).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny Llama-shaped model + tokenizer directory (generated once per session)."""
    from adaptr.hf.tiny import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def registry(tmp_path):
    from adaptr import Registry

    reg = Registry.init(tmp_path / "registry")
    yield reg
    reg.close()


@pytest.fixture
def registry_with_base(registry, tiny_base_dir):
    """A registry with the tiny base registered as `tiny`."""
    from adaptr.bases import add_local_base

    add_local_base(registry, "tiny", tiny_base_dir)
    return registry


def run_cli(*args: str, registry=None, env: dict | None = None, cwd=None, check: bool = False):
    """Run the real `adaptr` console script in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    if registry is not None:
        # A Registry, or a path (whose own `.root` attribute is the filesystem root, not ours).
        full_env["ADAPTR_REGISTRY"] = str(registry.root if hasattr(registry, "db_path") else registry)
    exe = shutil.which("adaptr", path=str(Path(sys.executable).parent)) or "adaptr"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"adaptr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def dump_registry(root: Path) -> str:
    """Every row of every table plus the file tree, as text: for byte-for-byte comparisons."""
    import sqlite3

    root = Path(root)
    conn = sqlite3.connect(root / "adaptr.db")
    lines = list(conn.iterdump())
    conn.close()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not p.name.startswith("adaptr.db"))
    return "\n".join(lines + files)
