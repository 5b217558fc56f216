"""Artifact store: seal, verify, staging, atomic placement."""

import json
import os

import pytest

from adaptr import store
from adaptr.errors import IntegrityError


def _artifact(path):
    path.mkdir(parents=True)
    (path / "a.txt").write_text("alpha")
    (path / "sub").mkdir()
    (path / "sub" / "b.bin").write_bytes(b"\x00\x01" * 1000)
    return path


def test_seal_then_verify(tmp_path):
    art = _artifact(tmp_path / "art")
    digest = store.seal(art)
    manifest = store.read_manifest(art)
    assert set(manifest["files"]) == {"a.txt", "sub/b.bin"}
    assert manifest["files"]["a.txt"]["size"] == 5
    assert store.verify(art, digest) == digest


def test_digest_depends_on_content_not_location(tmp_path):
    one = store.seal(_artifact(tmp_path / "one"))
    two = store.seal(_artifact(tmp_path / "two"))
    assert one == two
    other = _artifact(tmp_path / "three")
    (other / "a.txt").write_text("beta!")
    assert store.seal(other) != one


@pytest.mark.parametrize("damage, message", [
    (lambda art: (art / "a.txt").write_text("ALPHA"), "does not match"),
    (lambda art: (art / "a.txt").unlink(), "missing"),
    (lambda art: (art / "extra.txt").write_text("x"), "not in the manifest"),
    (lambda art: (art / store.MANIFEST).unlink(), "has no"),
    (lambda art: (art / store.MANIFEST).write_text("{"), "not valid JSON"),
])
def test_verify_detects_damage(tmp_path, damage, message):
    art = _artifact(tmp_path / "art")
    digest = store.seal(art)
    damage(art)
    with pytest.raises(IntegrityError, match=message) as info:
        store.verify(art, digest)
    assert info.value.hint


def test_verify_detects_rewritten_manifest(tmp_path):
    art = _artifact(tmp_path / "art")
    digest = store.seal(art)
    (art / "a.txt").write_text("other")
    store.seal(art)  # a consistent manifest, but not the recorded one
    with pytest.raises(IntegrityError, match="differs from the recorded"):
        store.verify(art, digest)


def test_staging_is_removed_unless_placed(tmp_path):
    artifacts = store.ArtifactStore(tmp_path)
    with artifacts.staging("x") as staged:
        assert staged.parent == artifacts.tmp
        assert f"-{os.getpid()}-" in staged.name
        (staged / "f").write_text("1")
    assert not staged.exists()
    with artifacts.staging("y") as staged:
        (staged / "f").write_text("1")
        store.seal(staged)
        artifacts.place(staged, tmp_path / "final" / "v1")
    assert (tmp_path / "final" / "v1" / "f").read_text() == "1"
    assert json.loads((tmp_path / "final" / "v1" / store.MANIFEST).read_text())["format"] == 1


def test_relative_and_absolute(tmp_path):
    artifacts = store.ArtifactStore(tmp_path)
    assert artifacts.relative(tmp_path / "adapters" / "x" / "v1") == "adapters/x/v1"
    assert artifacts.absolute("adapters/x/v1") == tmp_path / "adapters" / "x" / "v1"
    outside = tmp_path.parent / "elsewhere"
    assert artifacts.relative(outside) == str(outside.resolve())
    assert artifacts.absolute(str(outside)) == outside
