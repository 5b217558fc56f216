"""Hub failures: one clear line, exit code 2, the registry exactly as it was."""

from __future__ import annotations

import pytest
from conftest import dump_registry, run_cli

from adaptr import Registry
from hubserver import reserve_socket

from .helpers import publish


def _one_line_error(proc) -> str:
    """The single error line, which ends stderr (upload/download progress bars may come before it)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[-1]


def test_a_rejected_token_is_one_line_and_changes_nothing(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    before = dump_registry(reg.root)

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg,
                   env={**hub_env, "HF_TOKEN": "hf_wrong"})

    assert _one_line_error(proc) == ("error: the Hub rejected the token (401 Unauthorized) "
                                     "(hint: set HF_TOKEN, or run `hf auth login`)")
    assert dump_registry(reg.root) == before
    assert hub.repos == {}


def test_push_without_any_token_says_how_to_log_in(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    env = {**hub_env, "HF_TOKEN": ""}

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=env)

    assert _one_line_error(proc) == ("error: no Hugging Face token found "
                                     "(hint: set HF_TOKEN, or run `hf auth login`)")
    assert hub.requests == []


@pytest.mark.parametrize("spec", ["alice/nothing-here", "alice/nothing-here@v3"])
def test_pull_of_an_unknown_repo(registry_with_base, hub, hub_env, spec):
    before = dump_registry(registry_with_base.root)

    proc = run_cli("pull", spec, registry=registry_with_base, env=hub_env)

    assert _one_line_error(proc).startswith(
        "error: Hub repo alice/nothing-here not found (hint: check OWNER/NAME")
    assert dump_registry(registry_with_base.root) == before


def test_pull_of_an_unknown_version(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env, check=True)
    before = dump_registry(reg.root)

    proc = run_cli("pull", "alice/sft@v7", registry=reg, env=hub_env)

    assert _one_line_error(proc).startswith(
        "error: alice/sft has no revision 'v7' (hint: versions are tagged vN")
    assert dump_registry(reg.root) == before


def test_a_tag_that_holds_another_version_is_refused(registry_with_base, lora_sources, tiny_base_dir, hub,
                                                      hub_env, tmp_path):
    from adaptr.bases import add_local_base

    publish(registry_with_base, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=registry_with_base, env=hub_env, check=True)
    other = Registry.init(tmp_path / "other")
    add_local_base(other, "tiny", tiny_base_dir)
    publish(other, lora_sources[1], "sft")  # also sft-v1, different weights
    before = dump_registry(other.root)
    commits = dict(hub.repos["alice/sft"].commits)

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=other, env=hub_env)

    tag_commit = hub.repos["alice/sft"].tags["v1"]
    assert _one_line_error(proc) == (
        f"error: alice/sft already has tag v1 at commit {tag_commit[:12]}, "
        "holding different files than sft-v1 "
        "(hint: push to another --repo, or delete that tag on the Hub if it is wrong)")
    assert dump_registry(other.root) == before
    assert hub.repos["alice/sft"].commits == commits


@pytest.mark.parametrize("command", [["push", "sft-v1", "--repo", "alice/sft"], ["pull", "alice/sft@v1"]])
def test_an_unreachable_hub(registry_with_base, lora_sources, hub_env, command):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    closed = reserve_socket()
    endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there any more
    before = dump_registry(reg.root)

    proc = run_cli(*command, registry=reg, env={**hub_env, "HF_ENDPOINT": endpoint})

    assert _one_line_error(proc) == (f"error: cannot reach the Hub at {endpoint} "
                                     "(hint: check the network connection, or HF_ENDPOINT if you set it)")
    assert dump_registry(reg.root) == before


def test_invalid_repo_names_are_refused_before_any_request(registry_with_base, lora_sources, hub, hub_env):
    publish(registry_with_base, lora_sources[0], "sft")

    proc = run_cli("push", "sft-v1", "--repo", "no-owner", registry=registry_with_base, env=hub_env)

    assert _one_line_error(proc) == ("error: invalid Hub repo 'no-owner' "
                                     "(hint: write it as OWNER/NAME, e.g. alice/sft-tiny)")
    assert hub.requests == []


def test_a_commit_made_meanwhile_is_not_overwritten(registry_with_base, lora_sources, hub, hub_env):
    reg = registry_with_base
    publish(reg, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=reg, env=hub_env, check=True)
    publish(reg, lora_sources[1], "sft")
    before = dump_registry(reg.root)
    hub.before_commit = lambda repo: hub.commit_files("alice/sft", {"notes.md": b"someone else\n"})

    proc = run_cli("push", "sft-v2", "--repo", "alice/sft", registry=reg, env=hub_env)

    assert _one_line_error(proc) == ("error: alice/sft changed while pushing (someone else committed) "
                                     "(hint: run the push again)")
    assert "v2" not in hub.repos["alice/sft"].tags
    assert dump_registry(reg.root) == before


def test_a_corrupted_download_is_refused(registry_with_base, lora_sources, tiny_base_dir, hub, hub_env,
                                         tmp_path):
    from adaptr.bases import add_local_base

    publish(registry_with_base, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/sft", registry=registry_with_base, env=hub_env, check=True)
    repo = hub.repos["alice/sft"]
    blob = repo.commits[repo.tags["v1"]]["files"]["adapter_model.safetensors"]
    stored = hub.root / "objects" / blob["sha256"]
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    stored.write_bytes(bytes(data))
    other = Registry.init(tmp_path / "other")
    add_local_base(other, "tiny", tiny_base_dir)
    before = dump_registry(other.root)

    proc = run_cli("pull", "alice/sft@v1", registry=other, env=hub_env)

    line = _one_line_error(proc)
    assert line.startswith("error: alice/sft@")
    assert line.endswith(": adapter_model.safetensors does not match its sha256 in adaptr.json "
                         "(hint: the download or the repo is corrupted; pull again or re-push the version)")
    assert dump_registry(other.root) == before


def test_offline_mode_is_named(registry_with_base, lora_sources, hub, hub_env):
    publish(registry_with_base, lora_sources[0], "sft")

    proc = run_cli("push", "sft-v1", "--repo", "alice/sft", registry=registry_with_base,
                   env={**hub_env, "HF_HUB_OFFLINE": "1"})

    assert _one_line_error(proc) == ("error: HF_HUB_OFFLINE is set, so the Hub cannot be reached "
                                     "(hint: unset HF_HUB_OFFLINE to push or pull)")
    assert hub.requests == []


def test_a_private_repo_is_invisible_without_the_token(registry_with_base, lora_sources, hub, hub_env,
                                                       tiny_base_dir, tmp_path):
    from adaptr.bases import add_local_base

    publish(registry_with_base, lora_sources[0], "sft")
    run_cli("push", "sft-v1", "--repo", "alice/secret", "--private", registry=registry_with_base, env=hub_env,
            check=True)
    assert hub.repos["alice/secret"].private
    other = Registry.init(tmp_path / "other")
    add_local_base(other, "tiny", tiny_base_dir)

    proc = run_cli("pull", "alice/secret", registry=other, env={**hub_env, "HF_TOKEN": ""})

    assert _one_line_error(proc).startswith("error: Hub repo alice/secret not found")
    assert run_cli("pull", "alice/secret", registry=other, env=hub_env).returncode == 0
