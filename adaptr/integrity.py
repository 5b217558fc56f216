"""Verify before use: the one check every artifact read from the registry passes first.

- An adapter version (small): every file's sha256 against its manifest, the manifest's digest
  against the row, and its stacked chain complete (what it was trained on is still beneath it).
- A base (large): every file recorded at ``base add`` (``base_files``: size, mtime, sha256) is
  present with its size; a file whose size or mtime changed is re-hashed in full. ``deep``
  (`adaptr doctor`) re-hashes every file.

A failure is an :class:`IntegrityError` naming the file and how to repair it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import store
from .errors import IntegrityError

if TYPE_CHECKING:
    from .registry import Registry



def verified(registry: "Registry", node: dict, *, deep: bool = False) -> dict:
    """Return ``node`` (an adapter or base dict) once its files verify; raise IntegrityError."""
    if node["kind"] == "adapter":
        _verify_adapter(registry, node)
    else:
        _verify_base(registry, node, deep=deep)
    return node


def _verify_adapter(registry: "Registry", adapter: dict) -> None:
    path = Path(adapter["path"])
    if not path.is_dir():
        raise IntegrityError(f"{adapter['ref']}: its directory {path} is missing", _repair(adapter))
    try:
        store.verify(path, adapter["sha256"])
    except IntegrityError as exc:
        raise IntegrityError(f"{adapter['ref']} is damaged: {exc.message}", _repair(adapter)) from None
    _check_chain(registry, adapter)


def _check_chain(registry: "Registry", adapter: dict) -> None:
    """A version trained on stacked parents must still have all of them beneath it."""
    trained_on = adapter.record.frozen_adapters
    if not trained_on:
        return
    present = [a["ref"] for a in registry.stacked_beneath(adapter)]
    missing = [ref for ref in trained_on if ref not in present]
    if missing:
        raise IntegrityError(
            f"{adapter['ref']} was trained stacked on {', '.join(trained_on)}, but {missing[0]} is no "
            "longer beneath it, so it would load without that layer",
            f"remove it with `adaptr rm {adapter['ref']}`, or re-pull the chain with `adaptr pull --with-parents`")


def _repair(adapter: dict) -> str:
    record = adapter.record
    pulled = record.pulled_from or {}
    if pulled.get("repo"):
        return (f"pull it again (`adaptr pull {pulled['repo']}@{pulled.get('commit') or 'main'}`), or "
                f"remove it with `adaptr rm {adapter['ref']}`")
    if record.imported_from:
        return (f"import it again from {record.imported_from} after `adaptr rm {adapter['ref']}`, "
                "or restore the file from a backup")
    return f"restore the file from a backup, or remove the version with `adaptr rm {adapter['ref']}`"


# -- bases ---------------------------------------------------------------------------------


def base_files(directory: Path) -> list[dict]:
    """What ``base add`` records of a model directory: every file adaptr may load, hashed."""
    directory = Path(directory)
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if (not path.is_file() or path.suffix in store.UNLOADED_WEIGHT_SUFFIXES or path.name == store.MANIFEST
                or any(part.startswith(".") for part in rel.parts)):
            continue
        stat = path.stat()
        out.append({"path": rel.as_posix(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "sha256": store.sha256_file(path)})
    return out


def _verify_base(registry: "Registry", base: dict, *, deep: bool) -> None:
    if not base.get("path"):
        return  # a Hub base: the Hub client checks what it downloads for the pinned revision
    directory = Path(base["path"])
    records = registry.query("SELECT path, size, mtime_ns, sha256 FROM base_files WHERE base_id = ?",
                             [base["id"]])
    if not directory.is_dir():
        raise IntegrityError(f"base {base['name']!r}: its directory {directory} is missing", _base_repair(base))
    touched = []
    for record in records:
        problem, rehashed = _check_file(directory / record["path"], record, deep)
        if problem:
            raise IntegrityError(f"base {base['name']!r}: {record['path']} {problem}", _base_repair(base))
        if rehashed:
            touched.append(record["path"])
    if touched:
        registry.refresh_base_files(base["id"], directory, touched)


def _check_file(path: Path, record: dict, deep: bool) -> tuple[str | None, bool]:
    """``(problem, rehashed)`` for one recorded file of a base."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "is missing", False
    if stat.st_size != record["size"]:
        return f"has {stat.st_size} bytes, {record['size']} when it was registered", False
    if not deep and stat.st_mtime_ns == record["mtime_ns"]:
        return None, False
    if store.sha256_file(path) != record["sha256"]:
        return "changed since it was registered (its sha256 differs)", False
    return None, stat.st_mtime_ns != record["mtime_ns"]


def _base_repair(base: dict) -> str:
    if base.get("source_kind") == "derived":
        return ("the derived base is damaged: make it again with `adaptr merge "
                f"{base['source'].removeprefix('merge:')} --into-base --name NEW`")
    return ("restore the model directory as it was, or register the changed model as a new base "
            "with `adaptr base add`")
