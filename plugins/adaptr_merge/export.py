"""`adaptr export`: any version as files a plain transformers/PEFT user loads, plus `adaptr.json`.

- an adapter: its PEFT directory (``PeftModel.from_pretrained(base, OUT_DIR)``); an adapter
  stacked on others is not one adapter, so then every layer goes under ``stacked/NN-REF`` (parent
  first), nothing loadable is left at the top, and ``LOAD_ORDER.md`` says how to load them all;
- ``--one-adapter``: a stacked chain as ONE PEFT LoRA (ranks concatenated, scalings folded into
  ``lora_B``; adaptr/concat.py), loadable with ``PeftModel.from_pretrained(base, OUT_DIR)``;
- ``--target ENGINE``: what that serving engine reads (adaptr/serving.py decides whether it can,
  and whether the version goes as it is or as one adapter), and the command line that serves it;
  an adapter on a derived base (a ``--mode merge`` child) gets that base under ``OUT_DIR/base``;
- ``--merged``: the full model (``AutoModelForCausalLM.from_pretrained(OUT_DIR)``), streamed;
- a base name (a derived base, say): its model directory.

Everything is written into a temporary directory beside ``OUT_DIR`` and renamed into place, so a
failure leaves nothing behind. ``OUT_DIR`` must not exist or be empty.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from adaptr import UsageError, __version__, store


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty", "export into a new or empty directory")
    return out


def export(registry, ref: str, out_dir: str | os.PathLike, *, merged: bool = False, dtype: str = "bf16",
           reporter=None, one_adapter: bool = False, target: str | None = None) -> dict:
    """Export ``ref`` (an adapter ref or a base name) into ``out_dir``; return the adaptr.json data."""
    from adaptr.merging import merge_chain, normalize_dtype, plan_for_adapter, read_adapter_config

    out = check_out_dir(out_dir)
    dtype = normalize_dtype(dtype)
    node = registry.node(ref)
    if node["kind"] == "base":
        if one_adapter or target:
            raise UsageError(f"{node['name']!r} is a base, not an adapter",
                             "--one-adapter and --target export adapter versions")
        if not node.get("path"):
            raise UsageError(f"base {node['name']!r} has no local files to export", "download it first")
        writer, info = (lambda tmp: _copy_files(Path(node["path"]), tmp)), {"kind": "base"}
    elif merged:
        _, chain, plan = plan_for_adapter(registry, node)
        writer = lambda tmp: _write_merged(plan, tmp, dtype, reporter)  # noqa: E731
        info = {"kind": "merged_model", "chain": [a["ref"] for a in chain], "dtype": dtype}
    elif one_adapter or target:
        writer, info = _one_adapter_writer(registry, node, out, target)
    else:
        chain = merge_chain(registry, node)
        for adapter in chain:
            read_adapter_config(Path(adapter["path"]), adapter["ref"])
        writer = lambda tmp: _write_adapter_chain(registry, chain, tmp)  # noqa: E731
        info = {"kind": "adapter", "chain": [a["ref"] for a in chain]}
    return _atomically(out, lambda tmp: _provenance(registry, node, info, writer(tmp), tmp))


def _one_adapter_writer(registry, node: dict, out: Path, target: str | None):
    """Every check of a one-adapter (or serving) export, then the function that writes it."""
    from adaptr.merging import merge_chain, write_one_adapter
    from adaptr.serving import one_adapter_plan, serve_command

    chain = merge_chain(registry, node)
    base = registry.base(node["base"])
    form, verdict = ("one-adapter" if len(chain) > 1 else "as-is"), None
    if target:
        verdict = _servable_verdict(registry, node, target)
        form = verdict.form
    plan = None
    if form == "one-adapter":
        plan, error = one_adapter_plan(registry, chain)
        if plan is None:
            raise UsageError(f"{node['ref']} cannot be written as one adapter: {error.message}", error.hint)
    derived = base.get("source_kind") == "derived"
    if derived and not (base.get("path") and Path(base["path"]).is_dir()):
        raise UsageError(f"{node['ref']} stands on derived base {base['name']!r}, whose files are missing",
                         f"check it with `adaptr verify {base['name']}`")
    base_dir = out / "base" if derived else None
    info = {"kind": "adapter", "chain": [a["ref"] for a in chain], "form": form, "target": target}
    if derived:
        info["base_dir"] = "base"
    if verdict is not None:
        info["serving"] = verdict.to_dict()
        info["serve_command"] = serve_command(target, node["ref"], out, base, base_dir, verdict.settings)

    def write(tmp: Path) -> dict:
        written = {}
        if plan is not None:
            written["one_adapter"] = write_one_adapter(plan, tmp)
        else:
            _copy_files(Path(chain[0]["path"]), tmp)
        _point_at_base(tmp / store.CONFIG_FILE, base, base_dir)
        if derived:  # a --mode merge child: its base exists only in this registry
            _copy_files(Path(base["path"]), tmp / "base")
        return written

    return write, info


def _servable_verdict(registry, node: dict, target: str):
    """The target's verdict on ``node``; refused (one line, with the first reason) when it cannot serve it."""
    from adaptr.serving import check_target, servability

    verdict = servability(registry, node, (check_target(target),))[target]
    if not verdict.servable:
        more = f" (and {len(verdict.reasons) - 1} more)" if len(verdict.reasons) > 1 else ""
        raise UsageError(f"{target} cannot serve {node['ref']}: {verdict.reasons[0]}{more}",
                         f"`adaptr show {node['ref']}` lists every reason; `adaptr export {node['ref']} "
                         "DIR --merged` writes one full model any engine serves")
    return verdict


def _atomically(out: Path, fill) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.adaptr-", dir=out.parent))
    try:
        result = fill(tmp)
        if out.exists():
            out.rmdir()  # checked empty before the work began
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _copy_files(src: Path, dst: Path, skip: tuple[str, ...] = (store.MANIFEST, store.RECORD_FILE)) -> dict:
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name not in skip:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return {}


def _write_merged(plan, tmp: Path, dtype: str, reporter) -> dict:
    from adaptr.merging import write_merged_model

    return {"merge": write_merged_model(plan, tmp, dtype, reporter)}


def _write_adapter_chain(registry, chain: list[dict], tmp: Path) -> dict:
    """One adapter at the top level; a stack as ``stacked/NN-REF`` (parent first) plus
    ``LOAD_ORDER.md``, so that loading the top level alone fails instead of dropping the parents."""
    base = registry.base(chain[-1]["base"])
    if len(chain) == 1:
        _copy_adapter(chain[0], tmp, base)
        return {"load_order": [{"path": ".", "ref": chain[0]["ref"], "adapter_name": "default"}]}
    from adaptr.merging import peft_names

    order = []
    for position, (adapter, name) in enumerate(zip(chain, peft_names([a["ref"] for a in chain])), start=1):
        sub = f"stacked/{position:02d}-{adapter['ref']}"
        _copy_adapter(adapter, tmp / sub, base)
        order.append({"path": sub, "ref": adapter["ref"], "adapter_name": name})
    (tmp / "LOAD_ORDER.md").write_text(_load_order_note(order, base))
    return {"load_order": order}


def _copy_adapter(adapter: dict, dst: Path, base: dict) -> None:
    _copy_files(Path(adapter["path"]), dst)
    if base.get("source_kind") == "hub":  # a Hub id loads anywhere; a local path would not
        _point_at_base(dst / store.CONFIG_FILE, base, None)


def _point_at_base(config_path: Path, base: dict, base_dir: Path | None) -> None:
    """``base_model_name_or_path`` (and ``revision``): the exported base directory, the base's Hub
    id and commit, or the base's local directory."""
    from adaptr.merging import portable_config

    config = portable_config(json.loads(config_path.read_text()), base, base_dir=base_dir)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _load_order_note(order: list[dict], base: dict) -> str:
    from adaptr.merging import peft_snippet

    source, revision, note = base["source"], base.get("revision"), ""
    if base.get("source_kind") == "derived":
        source, revision = "BASE_DIR", None
        note = (f"\nBASE_DIR is base `{base['name']}`, a base adaptr derived by merging; "
                f"`adaptr export {base['name']} BASE_DIR` writes it.\n")
    elif base.get("source_kind") != "hub":
        revision = None
    top = order[-1]["ref"]
    snippet = peft_snippet(source, [(o["path"], o["ref"]) for o in order], revision)
    return "\n".join([
        "# Load order", "",
        f"`{top}` was trained stacked on {len(order) - 1} frozen adapter(s): it is not one adapter, and "
        "`PeftModel.from_pretrained(base, this_dir)` finds none here. Load every layer, parent first, "
        f"and keep them all active, on base `{base['name']}`:", note, "```python", snippet, "```", "",
        f"Or get one model with all of them merged in: `adaptr export {top} DIR --merged`.", ""])


def _public(node) -> dict:
    """A version or base as JSON, without what only this machine knows (paths, row ids)."""
    return {k: v for k, v in node.to_json().items() if k not in ("path", "id", "base_id", "_record_json")}


def _provenance(registry, node: dict, info: dict, written: dict, tmp: Path) -> dict:
    base = registry.base(node["base"]) if node["kind"] == "adapter" else node
    data = {
        "format": 1, "exported_by": f"adaptr {__version__}",
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "ref": node["ref"], **info, **written,
        "record": _public(node), "base": _public(base),
        "lineage": [{k: e[k] for k in ("child_ref", "parent_ref", "relation", "params", "parent_kind")}
                    for e in registry.ancestors(node["id"])],
    }
    if base.get("source_kind") == "derived":
        data["base_note"] = (f"base {base['name']!r} is a derived base made by adaptr; "
                             f"`adaptr export {base['name']} DIR` writes its model files")
    (tmp / store.RECORD_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return data
