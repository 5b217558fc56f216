"""The pushed card is usable without adaptr: its PEFT code loads the version, its base is named
exactly, no pushed file names this machine, and the loss curve is there as numbers and as a plot."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import run_cli

from .helpers import publish, pushed_chain, record_at, upload_folder
from .test_hub_token_and_bases import _add_hub_base


def _python_block(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1, card
    return blocks[0]


def _lora_digests(code: str, env: dict) -> dict:
    """Run ``code`` (a card's snippet) in a fresh process; the sha256 of every LoRA tensor it
    loaded, and the adapters left active."""
    check = code + (
        "\nimport json, hashlib\n"
        "state = {k: v for k, v in model.state_dict().items() if 'lora_' in k}\n"
        "print(json.dumps({'active': sorted(model.base_model.active_adapters), 'tensors': "
        "{k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in state.items()}}))\n")
    proc = subprocess.run([sys.executable, "-c", check], env={**os.environ, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _saved_digests(version: dict, adapter_name: str) -> dict:
    """The version's own safetensors, keyed as PEFT names them once loaded as ``adapter_name``."""
    import hashlib

    from safetensors.numpy import load_file

    saved = load_file(str(Path(version["path"]) / "adapter_model.safetensors"))
    return {re.sub(r"\.(lora_[AB])\.weight$", rf".\1.{adapter_name}.weight", k): hashlib.sha256(v.tobytes()).hexdigest()
            for k, v in saved.items()}


def test_the_cards_peft_code_loads_the_version_on_the_pinned_hub_base(
        registry_with_base, lora_sources, tiny_base_dir, hub, hub_env):
    reg = registry_with_base
    upload_folder(tiny_base_dir, "org/tiny-llama", hub_env)
    head = hub.repos["org/tiny-llama"].branches["main"]
    _add_hub_base(reg, "tiny-hub", "org/tiny-llama", hub_env)
    version = publish(reg, lora_sources[0], "chat", base="tiny-hub")
    run_cli("push", "chat-v1", "--repo", "alice/chat", registry=reg, env=hub_env, check=True)

    card = hub.read_file("alice/chat", "v1", "README.md").decode()
    code = _python_block(card)
    assert f"AutoModelForCausalLM.from_pretrained('org/tiny-llama', revision='{head}')" in code
    assert "PeftModel.from_pretrained(model, 'alice/chat', revision='v1'" in code
    pushed_config = json.loads(hub.read_file("alice/chat", "v1", "adapter_config.json"))
    assert (pushed_config["base_model_name_or_path"], pushed_config["revision"]) == ("org/tiny-llama", head)

    # Run the card's code as a PEFT user would (plain libraries, this Hub), then compare the
    # adapter it loaded with the version's own safetensors file.
    assert _lora_digests(code, hub_env)["tensors"] == _saved_digests(version, "chat-v1")


def test_a_stacked_versions_card_loads_its_chain_on_the_base_you_provide(registry_with_base, lora_sources,
                                                                         tiny_base_dir, hub, hub_env):
    reg = registry_with_base
    pushed_chain(reg, lora_sources, hub_env)  # dpo-v1 stacked on sft-v2, on the local base `tiny`

    card = hub.read_file("alice/dpo", "v1", "README.md").decode()
    code = _python_block(card)
    assert "PeftModel.from_pretrained(model, 'alice/sft', revision='v2', adapter_name='sft-v2')" in code
    assert "model.load_adapter('alice/dpo', revision='v1', adapter_name='dpo-v1')" in code
    assert "`BASE_DIR` is your copy of it" in card and reg.base("tiny")["config_sha256"] in card
    assert record_at(hub, "alice/dpo", "v1")["stacked_on"] == [
        {"ref": "sft-v2", "hub": {"repo": "alice/sft", "revision": "v2",
                                  "commit": hub.repos["alice/sft"].tags["v2"]}}]

    loaded = _lora_digests(code.replace("'BASE_DIR'", repr(str(tiny_base_dir))), hub_env)
    assert loaded["active"] == ["dpo-v1", "sft-v2"]  # both layers on, as they were trained
    assert loaded["tensors"] == {**_saved_digests(reg.resolve("sft-v2"), "sft-v2"),
                                 **_saved_digests(reg.resolve("dpo-v1"), "dpo-v1")}


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds, size = 8, [], None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        if kind == b"IDAT":
            assert len(zlib.decompress(body)) == size[1] * (1 + 3 * size[0])  # 8-bit RGB rows
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    return size


@pytest.mark.slow
def test_a_trained_version_pushes_no_local_path_and_its_loss_curve(
        registry_with_base, tiny_base_dir, hub, hub_env, tmp_path, tmp_path_factory):
    reg = registry_with_base
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?", "completion": f" {2 * i}."}) + "\n"
                            for i in range(16)))
    train = run_cli("train", "sft", "--base", "tiny", "--data", str(data), "--max-steps", "4",
                    "--set", "logging_steps=1", "--max-length", "32", registry=reg)
    assert train.returncode == 0, train.stderr
    run_id = reg.resolve("sft-v1")["run_id"]
    logged = [[m["step"], m["value"]] for m in reg.metrics(run_id, "loss")]
    assert [step for step, _ in logged] == [1, 2, 3, 4]

    shown = run_cli("show", "sft-v1", "--json", registry=reg)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["loss_curve"] == logged  # the Trainer's log = the metrics table

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env)
    assert proc.returncode == 0, proc.stderr

    repo = hub.repos["alice/sft"]
    pushed = sorted(repo.commits[repo.tags["v1"]]["files"])
    assert pushed == [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                      "adaptr.json", "loss.png"]
    roots = {str(tmp_path_factory.getbasetemp()), str(reg.root), str(tiny_base_dir), str(data)}
    for name in pushed:
        content = hub.read_file("alice/sft", "v1", name)
        for root in roots:
            assert root.encode() not in content, f"{name} names the local path {root}"
    record = record_at(hub, "alice/sft", "v1")
    assert record["loss_curve"] == logged
    assert record["record"]["data"]["path"] == "chat.jsonl"  # the file's name, not where it was
    assert json.loads(hub.read_file("alice/sft", "v1", "adapter_config.json"))["base_model_name_or_path"] is None

    assert _png_size(hub.read_file("alice/sft", "v1", "loss.png")) == (480, 200)
    card = hub.read_file("alice/sft", "v1", "README.md").decode()
    assert "![training loss by step](loss.png)" in card
    assert "4 logged steps" in card
    base = reg.base("tiny")
    assert "is not on the Hub, so you provide it" in card and base["config_sha256"] in card
    assert "AutoModelForCausalLM.from_pretrained('BASE_DIR')" in _python_block(card)
