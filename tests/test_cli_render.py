"""Lineage trees: DAG repeats, base links, and the caps that keep huge graphs readable."""

from rich.console import Console

from adaptr.cli import render


def _edge(child, parent, relation="continued"):
    return {"child_ref": child, "parent_ref": parent, "relation": relation, "params": {}}


def _draw(node, ancestors, descendants, **kwargs):
    asked = set()

    def label_for(refs):
        asked.update(refs)
        return {r: "lbl" for r in refs}

    tree = render.lineage_tree({"ref": node}, ancestors, descendants, label_for, **kwargs)
    console = Console(width=200, record=True, color_system=None)
    console.print(tree)
    return console.export_text(), asked


def test_diamond_is_drawn_once():
    # d continued from b and c, both continued from a
    ancestors = [_edge("d", "b"), _edge("d", "c", "merged"), _edge("b", "a"), _edge("c", "a")]
    text, _ = _draw("d", ancestors, [])
    assert text.count("continued a") == 2 and text.count("(see above)") == 1
    assert "merged c" in text and "descendants" in text and "(none)" in text


def test_repeated_base_links_are_left_out():
    ancestors = [_edge("v3", "v2"), _edge("v3", "tiny", "base"), _edge("v2", "v1"),
                 _edge("v2", "tiny", "base"), _edge("v1", "tiny", "base")]
    text, _ = _draw("v3", ancestors, [])
    assert text.count("trained on tiny") == 1 and "(see above)" not in text


def test_wide_and_deep_graphs_are_capped():
    wide = [_edge(f"kid{i}", "hub", "stacked") for i in range(250)]
    text, asked = _draw("hub", [], wide)
    assert "stacked kid99 " in text and "kid100 " not in text and "150 more" in text
    assert len(asked) == 101  # labels are fetched only for what is drawn
    chain = [_edge(f"v{i + 1}", f"v{i}") for i in range(1, 80)]
    text, _ = _draw("v1", [], chain, max_depth=10)
    assert "continued v11 " in text and "v12 " not in text and "--depth 0" in text
    text, _ = _draw("v1", [], chain[:30])
    assert "continued v31 " in text and "--depth 0" not in text
