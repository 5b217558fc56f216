"""The lineage of one version as a tree: its ancestors above, its descendants below."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

# A base can have thousands of adapters downstream; the tree shows this many nodes at most.
MAX_NODES = 400
# The registry links an adapter to the base it was trained on with the pseudo-relation "base".
RELATION_LABEL = {"base": "trained on"}


@dataclass(frozen=True)
class LineageNode:
    kind: str  # "adapter" or "base"
    ref: str
    id: int | None = None  # the registry node id


class LineageTree(Tree[LineageNode]):
    """Selecting a node asks the app to jump to that version or base."""

    class Jump(Message):
        def __init__(self, node: LineageNode) -> None:
            super().__init__()
            self.node = node

    def __init__(self, **kwargs) -> None:
        super().__init__("lineage", **kwargs)
        self.show_root = True
        self._count = 0
        self._plain: dict[int, Text] = {}  # tree node id -> label before annotation

    def show(self, node: dict, ancestors: list[dict], descendants: list[dict]) -> None:
        """Rebuild for ``node`` (an adapter or base record) from its lineage edges."""
        self.clear()
        self._count = 0
        self._expanded: set[tuple[str, int]] = set()
        self._plain = {}
        self.root.set_label(_label(node["ref"], node["kind"], None, bold=True))
        self.root.data = LineageNode(node["kind"], node["ref"], node["id"])
        up = self.root.add("ancestors", expand=True, allow_expand=bool(ancestors))
        parents: dict[int, list[dict]] = {}
        for edge in ancestors:
            parents.setdefault(edge["child"], []).append(edge)
        self._grow(up, node["id"], parents, key="parent")
        down = self.root.add("descendants", expand=True, allow_expand=bool(descendants))
        children: dict[int, list[dict]] = {}
        for edge in descendants:
            children.setdefault(edge["parent"], []).append(edge)
        self._grow(down, node["id"], children, key="child")
        if not ancestors:
            up.add_leaf(Text("none", style="dim"))
        if not descendants:
            down.add_leaf(Text("none", style="dim"))
        self.root.expand()
        self.move_cursor(self.root)

    def _grow(self, branch: TreeNode, node_id: int, edges: dict[int, list[dict]], *, key: str) -> None:
        """Add the edges of ``node_id``; a node met again (a diamond) is shown once, then noted."""
        self._expanded.add((key, node_id))
        for edge in edges.get(node_id, []):
            if self._count >= MAX_NODES:
                branch.add_leaf(Text("… more not shown", style="dim"))
                return
            self._count += 1
            other = edge[key]
            item = LineageNode(edge[f"{key}_kind"], edge[f"{key}_ref"], other)
            label = _label(item.ref, item.kind, RELATION_LABEL.get(edge["relation"], edge["relation"]))
            if other not in edges:
                branch.add_leaf(label, data=item)
            elif (key, other) in self._expanded:
                branch.add_leaf(label.append(" (see above)", style="dim"), data=item)
            else:
                child = branch.add(label, data=item, expand=True)
                self._grow(child, other, edges, key=key)

    def annotate(self, texts: dict[int, str]) -> None:
        """Append ``texts[node id]`` (a metric and its change) to each node's label; {} clears."""
        stack = [self.root]
        while stack:
            tree_node = stack.pop()
            stack.extend(tree_node.children)
            data = tree_node.data
            if data is None or data.id is None:
                continue
            plain = self._plain.setdefault(tree_node.id, tree_node.label.copy())
            label = plain.copy()
            if data.id in texts:
                label.append(f"  {texts[data.id]}", style="yellow")
            tree_node.set_label(label)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data is not None and event.node is not self.root:
            self.post_message(self.Jump(event.node.data))


def _label(ref: str, kind: str, relation: str | None, bold: bool = False) -> Text:
    text = Text()
    text.append("◆ " if kind == "base" else "● ", style="magenta" if kind == "base" else "cyan")
    text.append(ref, style="bold" if bold else "")
    if relation:
        text.append(f"  {relation}", style="dim italic")
    return text
