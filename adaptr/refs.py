"""Names and refs: `NAME-vN`, `NAME` (latest), `NAME@ALIAS`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")  # \Z: "$" would let a trailing newline in
_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>[0-9]+)\Z")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid adapter, base or alias name; raise UsageError otherwise."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise UsageError(
            f"invalid {what} {name!r}",
            "use 1-96 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_adapter_name(name: str) -> str:
    check_name(name, "adapter name")
    if _VERSIONED.match(name):
        raise UsageError(
            f"invalid adapter name {name!r}: it ends like a version (-vN)",
            "adaptr numbers versions itself; drop the -vN suffix",
        )
    return name


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return self.name if self.version is None else f"{self.name}-v{self.version}"


def parse_ref(text: str) -> Ref:
    if "@" in text:
        name, alias = text.split("@", 1)
        return Ref(check_name(name, "adapter name"), alias=check_name(alias, "alias"))
    match = _VERSIONED.match(text)
    if match:
        return Ref(check_name(match["name"], "adapter name"), version=int(match["version"]))
    return Ref(check_name(text, "ref"))


def format_ref(name: str, version: int) -> str:
    return f"{name}-v{version}"
