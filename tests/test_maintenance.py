"""`adaptr doctor`'s health check, through the API."""

import shutil

from adaptr.maintenance import check_health
from adaptr.store import sha256_file


def _publish(reg, name):
    with reg.store.staging("t") as staged:
        (staged / "adapter_model.safetensors").write_text(name)
        return reg.publish_adapter(staged, name=name, base="local", stage="sft")


def test_health_finds_each_kind_of_damage(registry, tmp_path):
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "config.json").write_text("{}")
    registry.add_base("local", source=str(base_dir), source_kind="local", path=base_dir,
                      info={"config_sha256": sha256_file(base_dir / "config.json")})
    with registry.store.staging("b") as staged:
        (staged / "model.safetensors").write_text("merged")
        registry.publish_base(staged, name="derived", source="merge:x")
    good, changed, gone = _publish(registry, "good"), _publish(registry, "changed"), _publish(registry, "gone")
    assert check_health(registry) == (5, [])

    (registry.root / changed["path"] / "adapter_model.safetensors").write_text("CHANGED")
    shutil.rmtree(registry.root / gone["path"])
    (base_dir / "config.json").write_text('{"changed": true}')
    (registry.root / "bases" / "derived" / "extra.txt").write_text("x")
    checked, problems = check_health(registry)
    assert checked == 5
    found = {p.ref: p.message for p in problems}
    assert set(found) == {"changed-v1", "gone-v1", "local", "derived"}
    assert "does not match" in found["changed-v1"] and "missing" in found["gone-v1"]
    assert "changed since" in found["local"] and "not in the manifest" in found["derived"]
    assert good["ref"] not in found
    quick = {p.ref for p in check_health(registry, hashes=False)[1]}
    assert quick == {"gone-v1", "local", "derived"}  # same size, so only hashing sees "changed"
