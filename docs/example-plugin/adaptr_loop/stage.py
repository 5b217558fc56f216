"""The stage `loop`: ``check`` validates cheaply before anything is written; ``run`` trains.

The loop is the textbook one: AdamW over the trainable (LoRA) parameters only, gradient
accumulation and clipping, a learning-rate scheduler. Everything that touches the registry goes
through the :class:`adaptr.StageContext`: progress, checkpoints, warnings and the published version.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from adaptr import ConflictError, IntegrityError, MachineError, StageContext, UsageError

from . import data


# -- check: runs before the run is recorded; raise to refuse ---------------------------------


def check(ctx: StageContext) -> None:
    """Refuse what cannot work, naming the fix; fill in the LoRA shape from the parent."""
    if ctx.request.quantize:
        raise UsageError("stage loop does not quantize the base", "drop --quantize")
    if ctx.parent and ctx.mode != "continue":
        raise UsageError(f"stage loop only continues a parent, not --mode {ctx.mode}",
                         "drop --mode, or use a stage that supports it (`adaptr train sft --help`)")
    if ctx.request.eval_data or ctx.request.eval_fraction:
        raise UsageError("stage loop does not evaluate", "drop --eval-data and --eval-fraction")
    if ctx.base_path is None:
        raise MachineError(f"base {ctx.base['name']!r} has no local files", "pull the base first")
    data.read_texts(Path(ctx.request.data))
    if ctx.request.save_steps is not None:  # `--save-steps N` is a common option of `adaptr train`
        ctx.config = dataclasses.replace(ctx.config, save_steps=ctx.request.save_steps)
    if ctx.parent:
        ctx.config = _config_with_parent_lora(ctx)


def _config_with_parent_lora(ctx: StageContext):
    """The config with the parent adapter's own LoRA shape; a given value that differs is refused."""
    ref = ctx.parent["ref"]
    saved = json.loads((Path(ctx.parent["path"]) / "adapter_config.json").read_text())
    if saved.get("peft_type") != "LORA":
        raise UsageError(f"{ref} is a {saved.get('peft_type')} adapter, not LoRA",
                         "stage loop continues LoRA adapters only")
    parent_lora = {"r": saved["r"], "lora_alpha": saved["lora_alpha"], "lora_dropout": saved["lora_dropout"],
                   "target_modules": _module_names(saved["target_modules"])}
    for key, parent_value in parent_lora.items():
        if key not in ctx.request.config:  # not given: inherited silently
            continue
        mine = getattr(ctx.config, key)
        if (_module_names(mine) if key == "target_modules" else mine) != parent_value:
            raise ConflictError(f"{key}={mine} conflicts with {ref}, which has {key}={parent_value}",
                                f"drop {key} to continue {ref} as it is, or train a new adapter with --base")
    return dataclasses.replace(ctx.config, **parent_lora)


def _module_names(target_modules) -> list[str] | str:
    """Short module names, sorted (PEFT saves ``all-linear`` as full paths in no fixed order)."""
    if isinstance(target_modules, str):
        return target_modules
    if list(target_modules) == ["all-linear"]:
        return "all-linear"
    return sorted({name.rsplit(".", 1)[-1] for name in target_modules})


# -- run: the training loop ---------------------------------------------------------------


def run(ctx: StageContext) -> None:
    """Load, train, checkpoint, publish. Returns early (after a checkpoint) when asked to stop."""
    import torch
    from transformers import get_scheduler, set_seed

    cfg = ctx.config
    set_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    memory = PeakMemory(device)
    tokenizer, model = _load_model(ctx, device)
    texts = data.read_texts(Path(ctx.request.data))
    rows = data.tokenize(tokenizer, texts, cfg.max_length)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.max_steps)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    frozen_before = _frozen_fingerprint(model)
    start = _resume(ctx, model, optimizer, scheduler, device) if ctx.resume_from else 0
    batches = data.batches(rows, cfg.per_device_train_batch_size, tokenizer.pad_token_id, cfg.seed,
                           start=start * cfg.gradient_accumulation_steps)
    stats = _train(ctx, model, batches, optimizer, scheduler, memory, start)
    if ctx.should_stop():
        return  # `adaptr cancel`: the newest checkpoint is saved; the run ends `cancelled`
    checks = _check_weights(model, before, frozen_before)
    record = _record(ctx, model, texts, stats, memory, checks)
    with ctx.staging("adapter") as staged:
        model.save_pretrained(staged)  # adapter_config.json, adapter_model.safetensors, README.md
        ctx.publish_adapter(staged, record=record,
                            metrics={"train_loss": stats["mean_loss"], "final_loss": stats["final_loss"]})


def _frozen_fingerprint(model):
    """One sum per frozen tensor: cheap, and enough to notice a base weight that moved."""
    import torch

    with torch.no_grad():
        return torch.stack([p.float().sum() for p in model.parameters() if not p.requires_grad])


def _check_weights(model, before: dict, frozen_before) -> dict:
    """Only the adapter may have changed, and it must have: else refuse to publish."""
    import torch

    if not torch.equal(_frozen_fingerprint(model), frozen_before):
        raise IntegrityError("a frozen base weight changed during training", "this is a bug; nothing was published")
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before)
    if changed == 0:
        raise IntegrityError("training left every adapter tensor unchanged",
                             "raise learning_rate or max_steps; nothing was published")
    return {"base_weights_unchanged": True, "adapter_tensors": len(before), "changed_tensors": changed}


def _load_model(ctx: StageContext, device):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(ctx.base_path, dtype=torch.float32)
    if ctx.parent:
        # Continue the parent's own weights. Never get_peft_model on a model that already has an
        # adapter: that nests LoRA layers ("Target module Dropout is not supported").
        model = PeftModel.from_pretrained(model, ctx.parent["path"], is_trainable=True)
    else:
        cfg = ctx.config
        targets = _module_names(cfg.target_modules)
        model = get_peft_model(model, LoraConfig(
            r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets, task_type="CAUSAL_LM"))
    return tokenizer, model.to(device)


def _train(ctx: StageContext, model, batches, optimizer, scheduler, memory, start: int) -> dict:
    """The optimizer steps after ``start``; reports progress and saves checkpoints through ``ctx``."""
    import torch

    cfg = ctx.config
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    ctx.reporter.start(cfg.max_steps, f"{ctx.stage.name} training")  # the progress bar, or a log line
    losses, tokens, started = [], 0, time.perf_counter()
    for step in range(start + 1, cfg.max_steps + 1):
        loss, step_tokens = _accumulate(model, batches, cfg, memory.device)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        memory.sample()
        losses.append(loss)
        tokens += step_tokens
        if step % cfg.logging_steps == 0 or step == cfg.max_steps:
            ctx.progress(step, cfg.max_steps, {"loss": loss, "grad_norm": float(grad_norm),
                                               "learning_rate": scheduler.get_last_lr()[0]})
        if (cfg.save_steps and step % cfg.save_steps == 0) or ctx.should_stop():
            _save_checkpoint(ctx, step, model, optimizer, scheduler)
        if ctx.should_stop():
            break
    seconds = time.perf_counter() - started
    return {"steps": len(losses), "tokens": tokens, "seconds": seconds,
            "final_loss": losses[-1] if losses else None,
            "mean_loss": sum(losses) / len(losses) if losses else None}


def _accumulate(model, batches, cfg, device) -> tuple[float, int]:
    """One optimizer step's forward and backward passes; returns the mean loss and token count."""
    import torch

    total_loss, tokens = 0.0, 0
    for _ in range(cfg.gradient_accumulation_steps):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(**batch, use_cache=False).loss / cfg.gradient_accumulation_steps
        loss.backward()
        total_loss += loss.item()
        tokens += int(batch["attention_mask"].sum())
    return total_loss, tokens


def _save_checkpoint(ctx: StageContext, step: int, model, optimizer, scheduler) -> dict:
    """Adapter, optimizer, scheduler and RNG state, sealed and recorded by ``ctx.save_checkpoint``."""
    import torch

    with ctx.staging("checkpoint") as staged:
        model.save_pretrained(staged)
        torch.save(optimizer.state_dict(), staged / "optimizer.pt")
        torch.save(scheduler.state_dict(), staged / "scheduler.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, staged / "rng_state.pth")
        state = {"global_step": step, "max_steps": ctx.config.max_steps, "stage": ctx.stage.name}
        (staged / "trainer_state.json").write_text(json.dumps(state, indent=1))
        return ctx.save_checkpoint(step, staged)


def _resume(ctx: StageContext, model, optimizer, scheduler, device) -> int:
    """Load what ``_save_checkpoint`` wrote (``adaptr resume`` hands over a verified copy of it);
    return the step it was saved at."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(ctx.resume_from["path"])
    loaded = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors", device=str(device)))
    if loaded.unexpected_keys:
        raise IntegrityError(f"checkpoint {path.name} does not fit this adapter "
                             f"({loaded.unexpected_keys[0]} is unexpected)", "resume from another checkpoint")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
    rng = torch.load(path / "rng_state.pth")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "trainer_state.json").read_text())["global_step"]


class PeakMemory:
    """Peak memory of the run: resident set size (sampled after every step), and on CUDA the
    allocator's peak allocated vs reserved bytes. Key names match the built-in stages' records."""

    def __init__(self, device):
        import psutil
        import torch

        self.device = device
        self.process = psutil.Process()
        self.peak_rss = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def record(self) -> dict:
        import torch

        out = {"cpu_peak_rss_bytes": self.peak_rss}
        if self.device.type == "cuda":
            out["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            out["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
            out["gpu_name"] = torch.cuda.get_device_name(self.device)
        return out


def _installed_version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _record(ctx: StageContext, model, texts, stats, memory, checks: dict) -> dict:
    """What is stored with the version beside its config: enough to reproduce and compare it."""
    path = Path(ctx.request.data)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    seconds = stats["seconds"]
    return {
        "trainer": "plain PyTorch loop (adaptr-loop)",
        "mode": "continue" if ctx.parent else "new",
        "parent": ctx.parent["ref"] if ctx.parent else None,
        "base": {key: ctx.base.get(key) for key in ("name", "source", "revision", "config_sha256", "tokenizer_sha256")},
        "data": {"path": str(path.resolve()), "sha256": data.digest(path), "rows": len(texts), "format": "text"},
        "seed": ctx.config.seed,
        "libraries": {name: _installed_version(name)
                      for name in ("torch", "transformers", "peft", "adaptr", "adaptr-loop")},
        "parameters": {"trainable": trainable, "total": total,
                       "trainable_percent": round(100.0 * trainable / total, 4)},
        "memory": memory.record(),
        "speed": {"train_runtime_s": round(seconds, 3), "tokens": stats["tokens"], "steps": stats["steps"],
                  "tokens_per_second": round(stats["tokens"] / seconds, 2) if seconds else None},
        "checks": checks,
    }
