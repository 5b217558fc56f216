"""Command palette entries: jump to any adapter version or base by typing part of its name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

MAX_HITS = 20


class RegistryProvider(Provider):
    """``Open adapter sft-v2`` / ``Open base tiny`` for every version and base that matches."""

    async def discover(self) -> Hits:
        app = self.app
        for base in app.registry.bases()[:MAX_HITS]:
            yield DiscoveryHit(f"Open base {base['name']}", partial(app.show_base, base["name"]),
                               help=f"{base['source_kind']} base")

    async def search(self, query: str) -> Hits:
        app = self.app
        matcher = self.matcher(query)
        words = query.strip()
        if not words:
            return
        like = f"%{words}%"
        rows = app.registry.query(
            "SELECT a.name || '-v' || a.version AS ref, a.stage, b.name AS base FROM adapters a "
            "JOIN bases b ON b.id = a.base_id WHERE a.name || '-v' || a.version LIKE ? "
            "ORDER BY a.created_at DESC, a.id DESC LIMIT ?", [like, MAX_HITS])
        for row in rows:
            title = f"Open adapter {row['ref']}"
            yield Hit(max(matcher.match(title), 0.5), matcher.highlight(title),
                      partial(app.show_adapter, row["ref"]),
                      help=f"{row['stage']} on {row['base']}")
        for base in app.registry.query("SELECT name, source_kind FROM bases WHERE name LIKE ? LIMIT ?",
                                       [like, MAX_HITS]):
            title = f"Open base {base['name']}"
            yield Hit(max(matcher.match(title), 0.5), matcher.highlight(title),
                      partial(app.show_base, base["name"]), help=f"{base['source_kind']} base")
