"""Artifact store: files first, row last.

An artifact (adapter version, derived base, checkpoint) is written into a temporary directory
under ``<root>/tmp``, every file fsynced, described by a sha256 manifest, and renamed into place.
Only then is it recorded in the registry. A crash leaves either nothing or a complete directory;
directories no row points at are removed by ``adaptr gc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import IntegrityError, MachineError

MANIFEST = "adaptr-manifest.json"
# The files of a PEFT adapter directory as adaptr writes and reads them.
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
RECORD_FILE = "adaptr.json"  # the version record beside the weights (exports, the Hub)
# Files that unpickle on load (arbitrary code): never loaded, pushed or pulled by adaptr.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Weight formats adaptr never loads (the pickles, and other frameworks' files).
UNLOADED_WEIGHT_SUFFIXES = (*PICKLE_SUFFIXES, ".h5", ".msgpack", ".gguf", ".onnx", ".ot")


def is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def build_manifest(directory: Path) -> dict:
    files = {
        p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _files(directory)
    }
    return {"format": 1, "files": files}


def manifest_digest(manifest: dict) -> str:
    """The artifact's identity: sha256 of its canonical manifest (file names, sizes, hashes)."""
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(directory: Path) -> str:
    """Fsync every file, write the manifest, and return the artifact's sha256."""
    manifest = build_manifest(directory)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    _fsync_tree(directory)
    return manifest_digest(manifest)


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(
            f"{directory} has no {MANIFEST}", "the artifact was not written by adaptr or is damaged"
        ) from None
    except json.JSONDecodeError:
        raise IntegrityError(f"{path} is not valid JSON", "the artifact is damaged") from None


def verify(directory: Path, expected_sha256: str | None = None, *, hashes: bool = True) -> str:
    """Check every file against the manifest; return the digest or raise IntegrityError.

    With ``hashes=False`` only presence and sizes are compared (fast: nothing is read).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    listed = manifest.get("files", {})
    present = {p.relative_to(directory).as_posix() for p in _files(directory)}
    for rel in sorted(set(listed) - present):
        raise IntegrityError(f"{directory}: {rel} is missing", "restore it or remove the version")
    for rel in sorted(present - set(listed)):
        raise IntegrityError(f"{directory}: {rel} is not in the manifest", "remove the stray file")
    for rel, entry in sorted(listed.items()):
        path = directory / rel
        if path.stat().st_size != entry["size"] or (hashes and sha256_file(path) != entry["sha256"]):
            raise IntegrityError(
                f"{directory}: {rel} does not match its sha256 in the manifest",
                "the file was changed or corrupted; restore it or remove the version",
            )
    digest = manifest_digest(manifest)
    if expected_sha256 and digest != expected_sha256:
        raise IntegrityError(
            f"{directory}: manifest digest {digest[:12]} differs from the recorded {expected_sha256[:12]}",
            "the manifest was rewritten; restore the artifact or remove the version",
        )
    return digest


class ArtifactStore:
    """Directories under a registry root: adapters/, bases/, runs/, and tmp/ for staging."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    @contextlib.contextmanager
    def staging(self, prefix: str = "artifact") -> Iterator[Path]:
        """A fresh temporary directory on the store's filesystem; removed if still there at exit."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets `adaptr gc` tell a live staging directory from a crashed one.
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=self.tmp))
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def check_writable(self) -> None:
        """Raise MachineError unless every directory the store writes into can be written.

        Checked before a run starts: a run must not train for an hour and then fail to save.
        """
        for directory in (self.tmp, self.root / "runs", self.root / "adapters", self.root / "bases"):
            while not directory.exists() and not directory.is_symlink() and directory != self.root:
                directory = directory.parent  # where it would be created; nothing is made here
            try:
                if not directory.is_dir():
                    raise NotADirectoryError(20, "not a directory")
                fd, probe = tempfile.mkstemp(prefix=".probe-", dir=directory)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise MachineError(f"cannot write into {directory} ({exc.strerror or exc})",
                                   "make the registry directory writable (and not full), then try again") from None

    def place(self, staged: Path, final: Path) -> None:
        """Atomically move a sealed staging directory to its final place."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def relative(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def absolute(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

