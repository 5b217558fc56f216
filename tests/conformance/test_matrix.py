"""Every cell of the matrix: it passes the oracle checks, or is refused before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import adaptr
from adaptr import StageRequest, run_stage

from . import oracle
from .conftest import CAUGHT, assert_refused
from .matrix import CELLS, CONFIG, NEEDS, Cell

pytestmark = pytest.mark.slow


# One xdist group per (family, configuration): its cells share one registry and its artifacts, so
# `pytest -n 2 --dist loadgroup` keeps each group on one worker.
@pytest.mark.parametrize("cell", [pytest.param(c, marks=pytest.mark.xdist_group(f"{c.family}-{c.config}"))
                                  for c in CELLS], ids=str)
def test_cell(cell: Cell, group, tmp_path, request):
    expected = cell.expected
    action = OPS[cell.op]
    for artifact in NEEDS.get(cell.op, ""):
        group.artifact(artifact)  # made first: the refusal must be what leaves the registry unchanged
    if expected.kind == "refused":
        assert_refused(group.registry, lambda: action(group, tmp_path, request, refused=True), expected.reason)
    else:
        action(group, tmp_path, request)


# -- training --------------------------------------------------------------------------------


def _load(group, ref: str):
    return adaptr.load(ref, registry=group.registry)


def _published_matches_end_of_training(group, version: dict, adapter_dirs: list[Path]) -> None:
    """Plain PEFT on the published files, and adaptr.load, give the end-of-training logits."""
    caught = CAUGHT[version["path"]]["logits"]
    base_dir = Path(group.registry.base(version["base"])["path"])
    plain = oracle.logits(oracle.peft_model(base_dir, adapter_dirs))
    torch.testing.assert_close(plain, caught, rtol=0, atol=1e-6)
    torch.testing.assert_close(oracle.logits(_load(group, version["ref"])), caught, rtol=0, atol=1e-6)


def op_train(group, tmp_path, request, refused=False):
    op = request.node.callspec.params["cell"].op
    if refused:
        return run_stage(group.registry, group.request(op))
    version = group.train(op)
    _published_matches_end_of_training(group, version, [Path(version["path"])])


def op_continue(group, tmp_path, request, refused=False):
    op = request.node.callspec.params["cell"].op
    if refused:
        return run_stage(group.registry, group.request(op))
    parent, version = group.artifact("P"), group.train(op)
    from safetensors.torch import load_file

    start = CAUGHT[version["path"]]["initial"]
    parent_tensors = load_file(str(Path(parent["path"]) / "adapter_model.safetensors"))
    assert start.keys() == parent_tensors.keys()
    assert all(torch.equal(start[k], parent_tensors[k]) for k in start), "continued from other tensors"
    _published_matches_end_of_training(group, version, [Path(version["path"])])


def op_stack(group, tmp_path, request, refused=False):
    if refused:
        return run_stage(group.registry, group.request("stack"))
    parent, version = group.artifact("P"), group.artifact("S")
    _published_matches_end_of_training(group, version, [Path(parent["path"]), Path(version["path"])])


def op_merge_mode(group, tmp_path, request, refused=False):
    if refused:
        return run_stage(group.registry, group.request("merge-mode"))
    parent, version = group.artifact("P"), group.train("merge-mode")
    derived = group.registry.base(version["base"])
    assert derived["source_kind"] == "derived"
    _merge_matches_peft(group, Path(derived["path"]), [Path(parent["path"])], bf16=False)
    _published_matches_end_of_training(group, version, [Path(version["path"])])
    # A second run reuses the derived base; check plans on it, untied lm_head and all.
    from adaptr.stages import prepare

    plan = prepare(group.registry, group.request("merge-mode")).plan
    untied = not oracle.base_model(Path(derived["path"])).config.tie_word_embeddings
    assert ("lm_head.weight" in plan.tensors.base_names) == (untied or not _tied(group))


# -- import, merge, export, hub, load -----------------------------------------------------------


def op_import(group, tmp_path, request, refused=False):
    from adaptr.peftdir import import_adapter

    if refused:
        return import_adapter(group.registry, group.peft_dir(), base="base", name="c.import")
    version = group.imported()
    source = group.peft_dir()
    files = source if (source / "adapter_config.json").is_file() else source / CONFIG[group.config].adapter_name
    assert (Path(version["path"]) / "adapter_model.safetensors").read_bytes() == \
        (files / "adapter_model.safetensors").read_bytes()
    plain = oracle.logits(oracle.peft_model(group.base_dir, [files]))
    torch.testing.assert_close(oracle.logits(_load(group, version["ref"])), plain, rtol=0, atol=1e-6)


def _tied(group) -> bool:
    from transformers import AutoConfig

    return bool(AutoConfig.from_pretrained(group.base_dir).tie_word_embeddings)


def _untie(group, adapter_dirs) -> bool:
    """Whether a merge must give lm_head its own weight (tied base, adapter touching either)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(group.base_dir)
    if not config.tie_word_embeddings:
        return False
    from .matrix import FAMILIES

    names = ("lm_head", FAMILIES[group.family].embed)
    for path in adapter_dirs:
        from safetensors import safe_open

        with safe_open(str(Path(path) / "adapter_model.safetensors"), "pt") as handle:
            if any(re.search(rf"\.({'|'.join(names)})\.", k + ".") for k in handle.keys()):
                return True
    return False


def _merge_matches_peft(group, merged_dir: Path, adapter_dirs: list[Path], *, bf16: bool, fp32_dir=None) -> None:
    """The merged model equals merge_and_unload, and keeps the adapted model's logits."""
    untie = _untie(group, adapter_dirs)
    reference = oracle.merged_state(group.base_dir, adapter_dirs, untie=untie)
    mine = oracle.model_state(merged_dir)
    if bf16:
        assert mine.keys() == reference.keys()
        worst = max(oracle.bf16_ulps(reference[k].to(torch.bfloat16), mine[k]) for k in reference)
        assert worst <= 1.0, worst
        return
    oracle.assert_close(mine, reference, atol=1e-6)
    adapted = oracle.logits(oracle.peft_model(group.base_dir, adapter_dirs))
    merged = oracle.logits(oracle.base_model(merged_dir))
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-4)


def _merge_request(parent: dict, name: str, **config) -> StageRequest:
    return StageRequest(stage="merge", parent=parent["ref"], name=name, config=config)


def op_merge_into_base(group, tmp_path, request, refused=False):
    parent = group.artifact("P")
    if refused:
        return run_stage(group.registry, _merge_request(parent, "m32", into_base=True, dtype="fp32"))
    for dtype in ("fp32", "bf16"):
        name = f"into-{dtype}"
        if not group.registry.query("SELECT 1 FROM bases WHERE name = ?", [name]):
            run_stage(group.registry, _merge_request(parent, name, into_base=True, dtype=dtype))
        merged = Path(group.registry.base(name)["path"])
        _merge_matches_peft(group, merged, [Path(parent["path"])], bf16=dtype == "bf16")


def _weighted(method: str):
    def op(group, tmp_path, request, refused=False):
        parent, child = group.artifact("P"), group.artifact("C")
        name = f"w.{method}"
        req = _merge_request(parent, name, adapters=[child["ref"]], method=method, weights=[0.7, 0.3])
        if refused:
            return run_stage(group.registry, req)
        run = run_stage(group.registry, req)
        from safetensors.torch import load_file

        mine = load_file(str(Path(group.registry.resolve(run["output_ref"])["path"]) / "adapter_model.safetensors"))
        reference = oracle.weighted_adapter(group.base_dir, [Path(parent["path"]), Path(child["path"])],
                                            method, [0.7, 0.3])
        oracle.assert_close(mine, reference, atol=1e-6)

    return op


def _export(group, ref: str, out: Path, **kwargs) -> Path:
    import adaptr_merge.export as export

    export.export(group.registry, ref, out, **kwargs)
    return out


def op_export(group, tmp_path, request, refused=False):
    parent = group.artifact("P")
    out = _export(group, parent["ref"], tmp_path / "out")
    plain = oracle.logits(oracle.peft_model(group.base_dir, [out]))
    torch.testing.assert_close(plain, oracle.logits(_load(group, parent["ref"])), rtol=0, atol=1e-6)


def op_export_stacked(group, tmp_path, request, refused=False):
    stacked = group.artifact("S")
    out = _export(group, stacked["ref"], tmp_path / "out")
    with pytest.raises(Exception):  # the top level is not one adapter of the stack, loaded alone
        oracle.peft_model(group.base_dir, [out])
    snippet = re.search(r"```python\n(.*?)```", (out / "LOAD_ORDER.md").read_text(), re.S).group(1)
    request.getfixturevalue("monkeypatch").chdir(out)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102  the generated instructions, run as a user would paste them
    torch.testing.assert_close(oracle.logits(scope["model"]), oracle.logits(_load(group, stacked["ref"])),
                               rtol=0, atol=1e-6)


def op_export_one_adapter(group, tmp_path, request, refused=False):
    parent, stacked = group.artifact("P"), group.artifact("S")
    out = _export(group, stacked["ref"], tmp_path / "out", one_adapter=True)
    chain = oracle.logits(oracle.peft_model(group.base_dir, [Path(parent["path"]), Path(stacked["path"])]))
    torch.testing.assert_close(oracle.logits(oracle.peft_model(group.base_dir, [out])), chain, rtol=0, atol=1e-5)


def op_export_merged(group, tmp_path, request, refused=False):
    parent = group.artifact("P")
    out = _export(group, parent["ref"], tmp_path / "out", merged=True, dtype="fp32")
    _merge_matches_peft(group, out, [Path(parent["path"])], bf16=False)


def op_push_pull(group, tmp_path, request, refused=False):
    from huggingface_hub import constants

    from adaptr import Registry, hub
    from adaptr.bases import add_local_base
    from conftest import HUB_TOKEN

    server = request.getfixturevalue("hub_server")
    server.reset(token=HUB_TOKEN)
    patch = request.getfixturevalue("monkeypatch")
    patch.setenv("HF_TOKEN", HUB_TOKEN)
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    parent = group.artifact("P")
    hub.push(group.registry, parent["ref"], f"conformance/{group.family}-{group.config}")
    other = Registry.init(tmp_path / "other")
    add_local_base(other, "base", group.base_dir)
    pulled = other.resolve(hub.pull(other, f"conformance/{group.family}-{group.config}")[-1]["ref"])
    pushed = {p.name for p in Path(parent["path"]).iterdir()} - {"README.md", "adaptr-manifest.json"}
    for name in pushed:  # every file but the card (the Hub's card is generated) comes back as it was
        assert (Path(pulled["path"]) / name).read_bytes() == (Path(parent["path"]) / name).read_bytes(), name
    plain = oracle.logits(oracle.peft_model(group.base_dir, [Path(parent["path"])]))
    torch.testing.assert_close(oracle.logits(adaptr.load(pulled["ref"], registry=other)), plain, rtol=0, atol=1e-6)
    assert not server.unknown_routes and not server.cdn_auth_headers
    other.close()


def op_load(group, tmp_path, request, refused=False):
    parent, stacked = group.artifact("P"), group.artifact("S")
    for version, dirs in ((parent, [parent["path"]]), (stacked, [parent["path"], stacked["path"]])):
        plain = oracle.logits(oracle.peft_model(group.base_dir, [Path(d) for d in dirs]))
        torch.testing.assert_close(oracle.logits(_load(group, version["ref"])), plain, rtol=0, atol=1e-6)


OPS = {
    "sft": op_train, "dpo": op_train, "continue": op_continue, "dpo-continue": op_continue,
    "stack": op_stack, "merge-mode": op_merge_mode, "import": op_import,
    "merge-into-base": op_merge_into_base, "weighted-linear": _weighted("linear"),
    "weighted-cat": _weighted("cat"), "export": op_export, "export-stacked": op_export_stacked,
    "export-merged": op_export_merged, "export-one-adapter": op_export_one_adapter, "push-pull": op_push_pull,
    "load": op_load,
}
