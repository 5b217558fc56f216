"""Registry records, refs, aliases, removal and lineage over adapters and bases in one graph."""

import sqlite3

import pytest

from adaptr import Registry
from adaptr.errors import ConflictError, NotFoundError, UsageError
from adaptr.registry import DB_NAME


def _publish(reg, name, base="tiny", parents=(), stage="sft", content="w"):
    with reg.store.staging("test") as staged:
        (staged / "adapter_model.safetensors").write_text(f"{name}:{content}")
        return reg.publish_adapter(staged, name=name, base=base, stage=stage, parents=list(parents))


@pytest.fixture
def reg(registry, tmp_path):
    (tmp_path / "basedir").mkdir()
    registry.add_base("tiny", source="test", source_kind="local", path=tmp_path / "basedir")
    return registry


def test_discovery(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTR_REGISTRY", raising=False)
    Registry.init(tmp_path / "proj" / "registry").close()
    deep = tmp_path / "proj" / "a" / "b"
    deep.mkdir(parents=True)
    assert Registry.locate(cwd=deep) == tmp_path / "proj" / "registry" / DB_NAME
    assert Registry.locate(cwd=tmp_path) is None
    with pytest.raises(NotFoundError, match="no adaptr registry") as info:
        Registry.discover(cwd=tmp_path)
    assert "adaptr init" in info.value.hint
    monkeypatch.setenv("ADAPTR_REGISTRY", str(tmp_path / "proj" / "registry"))
    assert Registry.locate(cwd=tmp_path) == tmp_path / "proj" / "registry" / DB_NAME
    with pytest.raises(NotFoundError, match="no registry at"):
        Registry.locate(tmp_path / "nowhere")


def test_pragmas(reg):
    conn = reg.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_reopen_applies_nothing_twice(reg):
    reg.close()
    again = Registry(reg.db_path)
    names = [r["name"] for r in again.query("SELECT name FROM _sqlite_migrations")]
    assert len(names) == len(set(names)) >= 1
    again.close()


def test_versions_refs_and_aliases(reg):
    v1 = _publish(reg, "sft")
    v2 = _publish(reg, "sft", parents=[(v1, "continued", {"mode": "continue"})])
    assert (v1["ref"], v2["ref"]) == ("sft-v1", "sft-v2")
    assert reg.resolve("sft")["ref"] == "sft-v2"
    assert reg.resolve("sft-v1")["id"] == v1["id"]
    assert v2["parents"] == [{"ref": "sft-v1", "kind": "adapter", "relation": "continued",
                              "params": {"mode": "continue"}}]
    reg.tag("sft-v1", "prod")
    assert reg.resolve("sft@prod")["ref"] == "sft-v1"
    reg.tag("sft-v2", "prod")  # moves
    assert reg.resolve("sft@prod")["ref"] == "sft-v2"
    assert reg.resolve("sft-v2")["aliases"] == ["prod"]
    with pytest.raises(NotFoundError):
        reg.untag("sft-v1", "prod")
    reg.untag("sft-v2", "prod")
    with pytest.raises(NotFoundError):
        reg.resolve("sft@prod")
    with pytest.raises(NotFoundError):
        reg.resolve("sft-v3")


def test_listing_and_counting(reg):
    for name in ("a", "b", "a", "c"):
        _publish(reg, name, stage="dpo" if name == "b" else "sft")
    assert [a["ref"] for a in reg.adapters()] == ["c-v1", "a-v2", "b-v1", "a-v1"]
    assert [a["ref"] for a in reg.adapters(limit=2)] == ["c-v1", "a-v2"]
    assert [a["ref"] for a in reg.adapters(limit=2, offset=2)] == ["b-v1", "a-v1"]
    assert [a["ref"] for a in reg.adapters(stage="dpo")] == ["b-v1"]
    assert reg.count_adapters() == 4 and reg.count_adapters(stage="sft") == 3
    assert reg.count_adapters(base="tiny") == 4


def test_bad_inputs_raise(reg):
    with pytest.raises(ConflictError, match="already exists"):
        reg.add_base("tiny", source="x", source_kind="local")
    with pytest.raises(UsageError):
        reg.add_base("../x", source="x", source_kind="local")
    with pytest.raises(NotFoundError):
        _publish(reg, "sft", base="nope")
    with pytest.raises(UsageError):
        _publish(reg, "sft-v2")
    with pytest.raises(UsageError):
        reg.tag("sft", "../x")


def test_failed_record_leaves_no_files(reg):
    ghost = {"id": 999_999}
    with pytest.raises(sqlite3.IntegrityError):
        _publish(reg, "sft", parents=[(ghost, "continued", {})])
    assert not (reg.root / "adapters" / "sft" / "v1").exists()
    assert reg.count_adapters() == 0
    assert _publish(reg, "sft")["ref"] == "sft-v1"  # the failed attempt used no number


def test_removed_numbers_are_not_reused(reg):
    _publish(reg, "sft")
    v2 = _publish(reg, "sft")
    reg.remove_adapter("sft-v2")
    assert not (reg.root / v2["path"]).exists()
    assert _publish(reg, "sft")["ref"] == "sft-v3"


def test_remove_refuses_parents_unless_forced(reg):
    v1 = _publish(reg, "sft")
    _publish(reg, "dpo", parents=[(v1, "continued", {})])
    reg.tag("sft-v1", "prod")
    with pytest.raises(ConflictError, match="child"):
        reg.remove_adapter("sft-v1")
    assert reg.resolve("sft-v1")
    reg.remove_adapter("sft-v1", force=True)
    assert reg.resolve("dpo-v1")["parents"] == []
    assert reg.query("SELECT * FROM aliases") == []
    assert not (reg.root / "adapters" / "sft" / "v1").exists()
    assert list(reg.store.tmp.iterdir()) == []


def _lineage_dag(reg, tmp_path):
    """tiny <- sft-v1 <- sft-v2 <- tiny-sft (derived base) <- dpo-v1 <- dpo2-v1 -> sft-v1."""
    sft1 = _publish(reg, "sft")
    sft2 = _publish(reg, "sft", parents=[(sft1, "continued", {})])
    other = _publish(reg, "other")
    with reg.store.staging("merge") as staged:
        (staged / "model.safetensors").write_text("merged")
        derived = reg.publish_base(staged, name="tiny-sft", source="merge:sft-v2",
                                   parents=[(sft2, "merged", {"weight": 1.0}), (other, "merged", {})])
    dpo = _publish(reg, "dpo", base="tiny-sft")
    dpo2 = _publish(reg, "dpo2", base="tiny-sft",
                    parents=[(dpo, "continued", {}), (sft1, "stacked", {})])
    return {"sft1": sft1, "sft2": sft2, "other": other, "derived": derived, "dpo": dpo, "dpo2": dpo2}


def _edges(edges):
    return {(e["child_ref"], e["parent_ref"], e["relation"], e["depth"]) for e in edges}


def test_lineage_walks_through_a_derived_base(reg, tmp_path):
    nodes = _lineage_dag(reg, tmp_path)
    assert reg.base("tiny-sft")["owned"] and reg.base("tiny-sft")["parents"][0]["ref"] == "sft-v2"
    assert _edges(reg.ancestors(nodes["dpo2"]["id"])) == {
        ("dpo2-v1", "dpo-v1", "continued", 1), ("dpo2-v1", "sft-v1", "stacked", 1)}
    assert _edges(reg.ancestors(nodes["dpo2"]["id"], bases=True)) == {
        ("dpo2-v1", "dpo-v1", "continued", 1), ("dpo2-v1", "sft-v1", "stacked", 1),
        ("dpo2-v1", "tiny-sft", "base", 1), ("dpo-v1", "tiny-sft", "base", 2),
        ("sft-v1", "tiny", "base", 2), ("tiny-sft", "sft-v2", "merged", 2),
        ("tiny-sft", "other-v1", "merged", 2), ("sft-v2", "sft-v1", "continued", 3),
        ("sft-v2", "tiny", "base", 3), ("other-v1", "tiny", "base", 3)}
    assert _edges(reg.descendants(nodes["sft1"]["id"])) == {
        ("sft-v2", "sft-v1", "continued", 1), ("dpo2-v1", "sft-v1", "stacked", 1),
        ("tiny-sft", "sft-v2", "merged", 2)}
    assert _edges(reg.descendants(nodes["sft1"]["id"], bases=True)) == {
        ("sft-v2", "sft-v1", "continued", 1), ("dpo2-v1", "sft-v1", "stacked", 1),
        ("tiny-sft", "sft-v2", "merged", 2), ("dpo-v1", "tiny-sft", "base", 3),
        ("dpo2-v1", "tiny-sft", "base", 3), ("dpo2-v1", "dpo-v1", "continued", 4)}
    derived_down = reg.descendants(nodes["derived"]["id"], bases=True)
    assert [e["depth"] for e in derived_down] == sorted(e["depth"] for e in derived_down)
    assert {e["child_kind"] for e in derived_down} == {"adapter"}
    assert reg.ancestors(reg.base("tiny")["id"]) == []


def test_lineage_of_a_node_by_ref_or_base_name(reg, tmp_path):
    _lineage_dag(reg, tmp_path)
    assert reg.node("tiny-sft")["kind"] == "base"
    assert reg.node("dpo2")["kind"] == "adapter"
    with pytest.raises(NotFoundError):
        reg.node("nothing")


def test_walk_terminates_on_a_cycle(reg):
    a = _publish(reg, "a")
    b = _publish(reg, "b", parents=[(a, "continued", {})])
    with reg.write():  # never made by adaptr, but a hand-edited database must not hang a query
        reg.db.execute("INSERT INTO edges (child, parent, relation) VALUES (?, ?, 'continued')",
                       [a["id"], b["id"]])
    assert _edges(reg.ancestors(a["id"])) == {("a-v1", "b-v1", "continued", 1),
                                              ("b-v1", "a-v1", "continued", 2)}


def test_deep_chain(reg):
    parent = _publish(reg, "chain")
    for _ in range(60):
        parent = _publish(reg, "chain", parents=[(parent, "continued", {})])
    up = reg.ancestors(parent["id"])
    assert len(up) == 60 and up[-1]["depth"] == 60 and up[-1]["parent_ref"] == "chain-v1"


def test_runs_checkpoints_metrics(reg, tmp_path):
    run = reg.create_run(stage="sft", request={"stage": "sft"}, config={"r": 4})
    assert run["status"] == "queued" and (tmp_path / "registry" / "runs" / run["id"]).is_dir()
    reg.add_metrics(run["id"], 1, {"loss": 2.0, "note": "x"})
    reg.add_metrics(run["id"], 2, {"loss": 1.5})
    assert [m["value"] for m in reg.metrics(run["id"], "loss")] == [2.0, 1.5]
    ckpt = reg.record_checkpoint(run["id"], 2, reg.root / "runs" / run["id"] / "checkpoints" / "step-2", "ab")
    assert reg.checkpoints(run["id"])[0]["path"] == ckpt["path"]
    assert reg.update_run(run["id"], status="succeeded")["status"] == "succeeded"


def test_ending_a_run_is_one_compare_and_set(registry):
    """Of two processes ending one run (a watcher that saw its process gone, the run itself), only
    the first counts; a run that is no longer queued is not started."""
    from adaptr import RunStatus

    run = registry.create_run(stage="sft", request={}, config={}, status="queued")
    assert registry.start_queued_run(run["id"]) is True
    assert registry.start_queued_run(run["id"]) is False  # running now: not queued any more
    assert registry.end_run(run["id"], RunStatus.INTERRUPTED, "its process is gone") is True
    assert registry.end_run(run["id"], RunStatus.SUCCEEDED, None) is False
    ended = registry.run(run["id"])
    assert (ended["status"], ended["error"]) == ("interrupted", "its process is gone") and ended["ended_at"]
    assert [r["id"] for r in registry.active_runs()] == []
    other = registry.create_run(stage="sft", request={}, config={}, status="running")
    assert registry.end_run(other["id"], RunStatus.FAILED, "x", only_from=(RunStatus.QUEUED,)) is False
    assert [r["id"] for r in registry.active_runs()] == [other["id"]]
