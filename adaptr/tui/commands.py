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
        adapters, bases = app.registry.search(words, MAX_HITS)
        for row in adapters:
            title = f"Open adapter {row['ref']}"
            yield Hit(max(matcher.match(title), 0.5), matcher.highlight(title),
                      partial(app.show_adapter, row["ref"]),
                      help=f"{row['stage']} on {row['base']}")
        for base in bases:
            title = f"Open base {base['name']}"
            yield Hit(max(matcher.match(title), 0.5), matcher.highlight(title),
                      partial(app.show_base, base["name"]), help=f"{base['source_kind']} base")
