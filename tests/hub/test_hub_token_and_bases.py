"""The token never leaves huggingface_hub's hands; Hub bases are pinned to a commit."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from adaptr import Registry
from adaptr.bases import add_local_base

from .helpers import TOKEN, card_metadata, publish, pushed_chain, record_at, upload_folder


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in Path(root).rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_token_is_nowhere_adaptr_writes_or_prints(registry_with_base, lora_sources, tiny_base_dir, hub,
                                                      hub_env, tmp_path):
    source = registry_with_base
    pushed_chain(source, lora_sources, hub_env)
    target = Registry.init(tmp_path / "other")
    add_local_base(target, "tiny", tiny_base_dir)
    procs = [
        run_cli("push", "dpo-v1", "--repo", "alice/dpo", "--with-parents", registry=source, env=hub_env),
        run_cli("pull", "alice/dpo@v1", "--with-parents", registry=target, env=hub_env),
        run_cli("pull", "alice/dpo@v1", "--json", registry=target, env=hub_env),
        run_cli("--debug", "pull", "alice/missing", registry=target, env=hub_env),
    ]
    assert [p.returncode for p in procs[:3]] == [0, 0, 0]
    assert target.resolve("dpo-v1")["hub_repo"] == "alice/dpo"

    needle = TOKEN.encode()
    for proc in procs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for reg in (source, target):
        conn = sqlite3.connect(reg.db_path)
        assert TOKEN not in "\n".join(conn.iterdump())
        conn.close()
        assert _files_containing(reg.root, needle) == []
    assert _files_containing(hub.root, needle) == []
    assert _files_containing(Path(hub_env["HF_HOME"]), needle) == []


def _add_hub_base(reg: Registry, name: str, hub_id: str, env: dict, revision: str | None = None) -> dict:
    """adaptr.hub.add_hub_base in a process of its own (this one may have imported the client offline)."""
    code = ("import json, sys; from adaptr import Registry; from adaptr.hub import add_hub_base; "
            "reg = Registry(sys.argv[1]); "
            "base = add_hub_base(reg, sys.argv[2], sys.argv[3], sys.argv[4] or None); "
            "print(json.dumps(base.to_json()))")
    proc = subprocess.run([sys.executable, "-c", code, str(reg.db_path), name, hub_id, revision or ""],
                          env={**os.environ, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_hub_base_is_pinned_without_downloading_weights(registry_with_base, tiny_base_dir, hub, hub_env):
    upload_folder(tiny_base_dir, "org/tiny-llama", hub_env)
    head = hub.repos["org/tiny-llama"].branches["main"]
    downloads_before = len(hub.requests)

    base = _add_hub_base(registry_with_base, "tiny-hub", "org/tiny-llama", hub_env)

    assert (base["source"], base["source_kind"], base["revision"]) == ("org/tiny-llama", "hub", head)
    local = registry_with_base.base("tiny")
    config_sha = hashlib.sha256((tiny_base_dir / "config.json").read_bytes()).hexdigest()
    assert base["config_sha256"] == local["config_sha256"] == config_sha
    assert base["tokenizer_sha256"] == local["tokenizer_sha256"]
    assert (base["num_parameters"], base["dtype"]) == (local["num_parameters"], local["dtype"])
    # Weights are never downloaded: only their header is read, with range requests.
    weights = [r for r in hub.requests[downloads_before:] if r[0] == "GET" and "/cdn/" in r[1]]
    assert weights and all(status == 206 for _, _, status in weights)
    fetched = {path.rsplit("/", 1)[-1] for _, path, _ in hub.requests[downloads_before:]
               if "/resolve/" in path}
    assert "config.json" in fetched and "tokenizer.json" in fetched


def test_an_adapter_on_a_hub_base_names_it_and_pulls_it_in(registry_with_base, lora_sources, tiny_base_dir,
                                                            hub, hub_env, tmp_path):
    reg = registry_with_base
    upload_folder(tiny_base_dir, "org/tiny-llama", hub_env)
    _add_hub_base(reg, "tiny-hub", "org/tiny-llama", hub_env)
    publish(reg, lora_sources[0], "chat", base="tiny-hub")
    run_cli("push", "chat-v1", "--repo", "alice/chat", registry=reg, env=hub_env, check=True)

    meta = card_metadata(hub.read_file("alice/chat", "v1", "README.md").decode())
    assert (meta["base_model"], meta["base_model_relation"]) == ("org/tiny-llama", "adapter")
    assert record_at(hub, "alice/chat", "v1")["base"]["hub_id"] == "org/tiny-llama"

    empty = Registry.init(tmp_path / "empty")
    proc = run_cli("pull", "alice/chat@v1", registry=empty, env=hub_env)

    assert proc.returncode == 0, proc.stderr
    base = empty.base("tiny-hub")
    assert (base["source"], base["source_kind"]) == ("org/tiny-llama", "hub")
    assert base["revision"] == reg.base("tiny-hub")["revision"]
    assert empty.resolve("chat-v1")["base"] == "tiny-hub"
