"""`adaptr export --one-adapter / --target` and `adaptr show`'s servability, through the real CLI.

The oracle is plain PEFT: the chain loaded as its adapters, all active, on the base; the export
loaded with ``PeftModel.from_pretrained(base, OUT_DIR)`` alone must give the same logits.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import dump_registry, run_cli

from .conftest import merge_into_base, publish_lora

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


@pytest.fixture(scope="module")
def serve_template(tmp_path_factory, sharded_base_dir) -> Path:
    """On `tiny`: a-v1; s-v1 stacked on a-v1 (rsLoRA, rank_pattern, alpha_pattern, other modules);
    c-v1 continued from s-v1 (so it stands on a-v1); rs-v1 (rsLoRA alone); d-v1 (DoRA) and
    ds-v1 stacked on it; e-v1 (LoRA on embed_tokens) and es-v1 stacked on it; big-v1 (rank 520);
    m-v1 trained on the derived base tiny-a (a-v1 merged in, as `--mode merge` does). On `tied`
    (a Qwen2 whose lm_head is its input embedding): head-v1 with a LoRA on lm_head."""
    from adaptr import Registry
    from adaptr.bases import add_local_base

    root = tmp_path_factory.mktemp("serve-template") / "registry"
    registry = Registry.init(root)
    add_local_base(registry, "tiny", sharded_base_dir)
    a = publish_lora(registry, "a", seed=1)
    s = publish_lora(registry, "s", seed=2, r=8, alpha=16, target_modules=("q_proj", "o_proj", "up_proj"),
                     use_rslora=True, rank_pattern={"o_proj": 2}, alpha_pattern={"up_proj": 3},
                     parents=[(a, "stacked", {"mode": "stack"})])
    publish_lora(registry, "c", seed=3, r=8, alpha=16, target_modules=("q_proj", "o_proj", "up_proj"),
                 parents=[(s, "continued", {"mode": "continue"})])
    publish_lora(registry, "rs", seed=4, use_rslora=True, alpha=6)
    d = publish_lora(registry, "d", seed=5, use_dora=True)
    publish_lora(registry, "ds", seed=6, parents=[(d, "stacked", {"mode": "stack"})])
    e = publish_lora(registry, "e", seed=7, target_modules=("embed_tokens", "q_proj"))
    publish_lora(registry, "es", seed=10, r=2, target_modules=("embed_tokens", "k_proj"),
                 parents=[(e, "stacked", {"mode": "stack"})])
    publish_lora(registry, "big", seed=8, r=520, alpha=8, target_modules=("q_proj",), scale_b=0.001)
    derived = merge_into_base(registry, a, name="tiny-a", dtype="fp32")
    from adaptr.hf.tiny import make_tiny_base

    add_local_base(registry, "tied", make_tiny_base(root.parent / "tied-qwen2", family="qwen2"))
    publish_lora(registry, "head", base="tied", seed=11, target_modules=("q_proj", "lm_head"))
    publish_lora(registry, "m", base=derived["name"], seed=9, parents=[(a, "merged", {"mode": "merge"})])
    registry.close()
    return root


@pytest.fixture
def serve_registry(serve_template, tmp_path):
    from adaptr import Registry

    root = tmp_path / "registry"
    shutil.copytree(serve_template, root)
    registry = Registry(root / "adaptr.db")
    yield registry
    registry.close()


def _base(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def stacked_logits(base_dir, adapter_dirs: list[str]):
    """Plain PEFT: every adapter of the chain loaded under its own name, all active."""
    from peft import PeftModel

    names = [f"layer{i}" for i in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(_base(base_dir), adapter_dirs[0], adapter_name=names[0])
    for path, name in zip(adapter_dirs[1:], names[1:]):
        model.load_adapter(path, adapter_name=name)
    model.base_model.set_adapter(names)
    with torch.no_grad():
        return model(IDS).logits


def one_adapter_logits(base_dir, adapter_dir):
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(_base(base_dir), adapter_dir).eval()(IDS).logits


@pytest.mark.parametrize("ref,chain,rank", [("s-v1", ["a-v1", "s-v1"], 4 + 8), ("c-v1", ["a-v1", "c-v1"], 4 + 8),
                                            ("es-v1", ["e-v1", "es-v1"], 4 + 2)])
def test_one_adapter_equals_the_stacked_chain(serve_registry, tmp_path, ref, chain, rank):
    out = tmp_path / "one"
    meta = json.loads(run_cli("export", ref, str(out), "--one-adapter", "--json", registry=serve_registry,
                              check=True).stdout)
    assert meta["chain"] == chain and meta["form"] == "one-adapter"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == meta["one_adapter"]["rank"] == rank
    assert not config["use_rslora"] and not config["rank_pattern"] and not config["alpha_pattern"]
    base_dir = serve_registry.base("tiny")["path"]
    expected = stacked_logits(base_dir, [serve_registry.resolve(r)["path"] for r in chain])
    got = one_adapter_logits(base_dir, str(out))
    assert (expected - _base(base_dir)(IDS).logits).abs().max() > 1e-3  # the chain changes the model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_show_reports_servability(serve_registry):
    shown = json.loads(run_cli("show", "d-v1", "--json", registry=serve_registry, check=True).stdout)
    assert {"ref", "config", "record", "metrics"} <= shown.keys()  # the fields it always had
    serving = shown["serving"]
    assert list(serving) == ["vllm", "llama.cpp", "lorax", "tgi"]
    assert not serving["vllm"]["servable"] and "DoRA" in serving["vllm"]["reasons"][0]
    assert not serving["llama.cpp"]["servable"] and not serving["tgi"]["servable"]
    a = json.loads(run_cli("show", "a-v1", "--json", registry=serve_registry, check=True).stdout)["serving"]
    assert all(v["servable"] and v["form"] == "as-is" for v in a.values())
    assert a["vllm"]["settings"] == {"max_lora_rank": 8}
    e = json.loads(run_cli("show", "e-v1", "--json", registry=serve_registry, check=True).stdout)["serving"]
    assert e["vllm"]["servable"] and not e["tgi"]["servable"] and "embeddings" in e["tgi"]["reasons"][0]
    human = run_cli("show", "big-v1", registry=serve_registry, check=True).stdout
    assert "serving" in human and "above vLLM's largest --max-lora-rank" in " ".join(human.split())
    head = json.loads(run_cli("show", "head-v1", "--json", registry=serve_registry, check=True).stdout)["serving"]
    assert not head["llama.cpp"]["servable"] and "tied input embedding" in head["llama.cpp"]["reasons"][0]
    assert head["vllm"]["servable"] and not head["tgi"]["servable"] and "lm_head" in head["tgi"]["reasons"][0]


def test_show_without_the_files_still_shows_the_record(serve_registry):
    (Path(serve_registry.resolve("a-v1")["path"]) / "adapter_model.safetensors").unlink()
    proc = run_cli("show", "a-v1", "--json", registry=serve_registry, check=True)
    shown = json.loads(proc.stdout)
    assert shown["ref"] == "a-v1" and shown["serving"]["error"].startswith("cannot tell")
    assert "cannot tell" in run_cli("show", "a-v1", registry=serve_registry, check=True).stdout


def test_export_target_vllm_prints_the_serve_command(serve_registry, tmp_path):
    out = tmp_path / "vllm"
    command = run_cli("export", "s-v1", str(out), "--target", "vllm", registry=serve_registry,
                      check=True).stdout.strip()
    argv = shlex.split(command)
    base_dir = serve_registry.base("tiny")["path"]
    assert argv[:3] == ["vllm", "serve", base_dir] and "--enable-lora" in argv
    assert argv[argv.index("--lora-modules") + 1] == f"s-v1={out}"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # ranks 4 + 8 = 12: the next allowed value
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_dir and (out / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "adaptr.json").read_text())
    assert meta["target"] == "vllm" and meta["serving"]["servable"] and meta["serve_command"] == command


def test_export_target_rewrites_rslora_for_llama_cpp(serve_registry, tmp_path):
    shown = json.loads(run_cli("show", "rs-v1", "--json", registry=serve_registry, check=True).stdout)
    assert shown["serving"]["llama.cpp"]["form"] == "one-adapter" and shown["serving"]["vllm"]["form"] == "as-is"
    out = tmp_path / "gguf-ready"
    command = run_cli("export", "rs-v1", str(out), "--target", "llama.cpp", registry=serve_registry,
                      check=True).stdout
    assert "convert_lora_to_gguf.py" in command
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] == 4 and not config["use_rslora"]  # llama.cpp: alpha / r = 1
    base_dir = serve_registry.base("tiny")["path"]
    torch.testing.assert_close(one_adapter_logits(base_dir, str(out)),
                               one_adapter_logits(base_dir, serve_registry.resolve("rs-v1")["path"]),
                               atol=1e-5, rtol=0)


def test_merge_mode_child_exports_with_its_derived_base(serve_registry, tmp_path):
    out = tmp_path / "m"
    argv = shlex.split(run_cli("export", "m-v1", str(out), "--target", "vllm", registry=serve_registry,
                               check=True).stdout)
    assert argv[2] == str(out / "base")
    assert (out / "base" / "config.json").is_file() and list((out / "base").glob("*.safetensors"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(out / "base")
    derived = serve_registry.base("tiny-a")["path"]
    torch.testing.assert_close(one_adapter_logits(str(out / "base"), str(out)),
                               one_adapter_logits(derived, serve_registry.resolve("m-v1")["path"]),
                               atol=1e-5, rtol=0)


BAD_EXPORTS = [
    (["d-v1", "--target", "vllm"], "vllm cannot serve d-v1: DoRA"),
    (["big-v1", "--target", "vllm"], "above vLLM's largest --max-lora-rank (512)"),
    (["e-v1", "--target", "tgi"], "tgi cannot serve e-v1: LoRA on embeddings"),
    (["ds-v1", "--one-adapter"], "does not add to others"),
    (["ds-v1", "--target", "lorax"], "cannot be one adapter"),
    (["a-v1", "--target", "nosuch"], "unknown serving target 'nosuch'"),
    (["a-v1", "--target", "vllm", "--merged"], "--merged writes a full model"),
    (["tiny", "--target", "vllm"], "is a base, not an adapter"),
]


@pytest.mark.parametrize("args,message", BAD_EXPORTS, ids=[m for _, m in BAD_EXPORTS])
def test_bad_export_exits_2_and_writes_nothing(serve_registry, tmp_path, args, message):
    before, out = dump_registry(serve_registry.root), tmp_path / "out"
    proc = run_cli("export", args[0], str(out), *args[1:], registry=serve_registry)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "hint:" in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert dump_registry(serve_registry.root) == before
