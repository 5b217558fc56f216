"""What ``check`` settles before any weight loads, so that a run never fails after training.

- the TRL config (``SFTConfig``/``DPOConfig``), built once here and used by the trainer as is;
- the ``LoraConfig``, and settings PEFT accepts but adaptr cannot keep its promises with;
- the tokenizer and its chat template applied to the first rows of the data;
- the adapter wrapped onto the model built on the meta device (no weights): the tensors
  ``save_pretrained`` will write, which parameters train, and which base parameters the
  fingerprint covers, all shown to agree before step 1.

Errors the libraries raise while being configured become one-line :class:`UsageError` or
:class:`ConflictError` with a hint.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import AdaptrError, ConflictError, UsageError
from ..peftdir import BASE_ALTERING_INITS
from ..store import CONFIG_FILE, WEIGHTS_FILE
from . import checks, loading
from .recipe import lora_kwargs, training_kwargs

_ROWS_CHECKED = 8


@dataclass(frozen=True)
class TensorPlan:
    """The adapter's tensors and the base fingerprint's coverage, worked out on the meta device."""

    expected: dict[str, tuple]     # key save_pretrained writes -> shape
    owned: frozenset[str]          # base parameters the adapter itself trains and saves (biases)
    chain_owned: frozenset[str]    # base parameters that loading the frozen adapters overwrites
    base_names: tuple[str, ...]    # base parameters the fingerprint covers


@contextmanager
def refused(what: str, hint: str, error: type[AdaptrError] = UsageError):
    """Turn a library's constructor error into one line: ``what: <its message>`` with ``hint``."""
    try:
        yield
    except AdaptrError:
        raise
    except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError, AttributeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise error(f"{what}: {text[:300]}", hint) from None


# -- settings ----------------------------------------------------------------------------------


def refuse_unsupported(config, mode: str | None) -> None:
    """LoRA settings PEFT would train with but whose result adaptr could not vouch for."""
    init = str(config.init_lora_weights or "").lower()
    if mode != "continue" and init.startswith(BASE_ALTERING_INITS):
        raise UsageError(f"init_lora_weights={config.init_lora_weights} rewrites the base weights "
                         "(PEFT subtracts the initial adapter from them), and adaptr keeps bases unchanged",
                         "use init_lora_weights true, false or gaussian")
    if mode != "continue" and init == "eva":
        raise UsageError("init_lora_weights=eva needs PEFT's data-driven initialisation "
                         "(initialize_lora_eva_weights), which adaptr does not run",
                         "use init_lora_weights true, false or gaussian")


def refuse_stacking(frozen: list[dict], child) -> None:
    """Stacks PEFT cannot run, or not reproducibly: DoRA, two adapters with biases or modules_to_save."""
    import json

    configs = [(a["ref"], json.loads((Path(a["path"]) / CONFIG_FILE).read_text())) for a in frozen]
    configs.append(("the new adapter", {"bias": child.bias, "modules_to_save": child.modules_to_save,
                                        "use_dora": child.use_dora}))
    dora = [ref for ref, c in configs if c.get("use_dora")]
    if dora:
        raise UsageError(f"--mode stack with DoRA ({', '.join(dora)}): DoRA rescales the output of the adapters "
                         "PEFT applied before it, so a stack depends on their order and no merge reproduces it",
                         "use --mode merge (the parent is merged into a derived base) or --mode continue")
    saving = [ref for ref, c in configs if c.get("modules_to_save")]
    if len(saving) > 1:
        raise UsageError(f"--mode stack with modules_to_save in {' and '.join(saving)}: PEFT keeps one trained "
                         "copy of a module active at a time", "use --mode merge (the parent is merged into a "
                         "derived base), or drop modules_to_save from the new adapter")
    biased = [ref for ref, c in configs if c.get("bias", "none") != "none"]
    if len(biased) > 1:
        raise UsageError(f"--mode stack with trained biases in {' and '.join(biased)}: PEFT allows one adapter "
                         "with biases at a time", "use --mode merge, or bias=none for the new adapter")


def lora_config(config):
    """The ``peft.LoraConfig`` of a new adapter, PEFT's own validation included."""
    from peft import LoraConfig

    with refused("PEFT refused the LoRA settings", "fix the LoRA options (see `adaptr train sft --help`)"):
        return LoraConfig(**lora_kwargs(config))


def trainer_args(ctx, spec, has_eval: bool, output_dir: str | Path):
    """The trainer class and its TRL config, built from the stage config: the one builder."""
    import torch

    from ..config import resolve_class

    TrainerClass, ArgsClass = resolve_class(spec.trainer), resolve_class(spec.trainer_config)
    kwargs = training_kwargs(ctx.config)
    cuda = torch.cuda.is_available()
    if kwargs.get("bf16") is None:
        kwargs["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
    # transformers 5 renamed it; TRL's configs still default the old name to True.
    kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing", False)
    kwargs.pop("save_total_limit", None)  # adaptr prunes the checkpoints it records (checkpoint_policy)
    save_steps = ctx.request.save_steps
    eval_steps = kwargs.pop("eval_steps", None)
    kwargs.update(
        output_dir=str(output_dir), disable_tqdm=True, use_cpu=not cuda,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        save_total_limit=None, eval_strategy="steps" if (has_eval and eval_steps) else "no",
        eval_steps=eval_steps, logging_first_step=True, dataloader_pin_memory=cuda)
    kwargs.setdefault("report_to", [])
    with refused(f"TRL refused the {ArgsClass.__name__} settings", "fix the options named above"):
        return TrainerClass, ArgsClass(**kwargs)


def checkpoint_policy(config) -> int | None:
    """How many checkpoints a run keeps: ``save_total_limit`` (the last N, plus the best when
    ``metric_for_best_model`` is set); None keeps them all."""
    limit = config.trainer_options.get("save_total_limit")
    if limit is not None and limit < 1:
        raise UsageError(f"save_total_limit={limit} would keep no checkpoint to resume from",
                         "give save_total_limit >= 1, or leave it out to keep every checkpoint")
    return limit


# -- data through the tokenizer ----------------------------------------------------------------


def check_tokenization(tokenizer, config, data) -> None:
    """Apply the tokenizer (and chat template) to the first rows, as TRL's trainers will."""
    assistant_only = bool(getattr(config, "assistant_only_loss", False))
    template = _training_template(tokenizer, data.rows[0]) if assistant_only else None
    numbers = data.row_numbers or list(range(1, len(data.rows) + 1))
    for row, number in list(zip(data.rows, numbers))[:_ROWS_CHECKED]:
        where = f"{data.path}: row {number}"
        try:
            masks = _tokenize_row(tokenizer, data.data_format, row, assistant_only, template)
        except AdaptrError:
            raise
        except Exception as exc:  # jinja2 template errors, a missing chat template, bad content
            text = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise UsageError(f"{where}: the tokenizer cannot encode it ({text})",
                             "give the base a chat template, or use plain-text rows") from None
        if assistant_only and masks is not None and 1 not in masks:
            raise UsageError(f"{where}: assistant_only_loss found no assistant tokens",
                             "the chat template needs {% generation %} marks; or drop assistant_only_loss")


def _training_template(tokenizer, first_row: dict) -> str | None:
    """The chat template SFTTrainer masks assistant tokens with (TRL patches known templates)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not any(isinstance(v, list) for v in first_row.values()):
        raise UsageError("assistant_only_loss needs conversational rows (lists of messages)",
                         "drop assistant_only_loss, or give messages rows")
    if has_generation_markers(tokenizer.chat_template or ""):
        return None
    with refused("assistant_only_loss: TRL has no training version of this base's chat template",
                 "give the base a chat template with {% generation %} marks, or drop assistant_only_loss"):
        return get_training_chat_template(processing_class=tokenizer)


def _tokenize_row(tokenizer, fmt, row: dict, assistant_only: bool, template: str | None = None):
    """Token ids of one row the way TRL builds them, by the row's dataset format: a whole
    example, or a prompt (with the generation prompt) and each completion after it. Returns the
    assistant mask when asked for it."""
    def encode(value, **kwargs):
        if isinstance(value, list):
            if template:
                kwargs["chat_template"] = template
            out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **kwargs)
        else:
            out = tokenizer(text=value)
        if not out["input_ids"]:
            raise UsageError("it encodes to no tokens", "drop empty rows")
        return out

    masked = {"return_assistant_tokens_mask": True} if assistant_only else {}
    if fmt.whole:
        return encode(row[fmt.whole], **(masked if isinstance(row[fmt.whole], list) else {})).get("assistant_masks")
    prompt = row[fmt.prompt]
    encode(prompt, **_generation(prompt))
    masks = None
    for key in fmt.completions:
        out = encode(_joined(prompt, row[key]), **(masked if isinstance(prompt, list) else {}))
        masks = out.get("assistant_masks") if masks is None else masks
    return masks


def _generation(prompt) -> dict:
    return {"add_generation_prompt": True} if isinstance(prompt, list) else {}


def _joined(prompt, rest):
    return prompt + rest if isinstance(prompt, type(rest)) else rest


# -- the adapter on the meta device ------------------------------------------------------------


def meta_model(base: dict, *, untie: bool = False):
    """The base's architecture with no weights (every tensor on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source, kwargs = loading.model_source(base)
    with refused(f"transformers cannot build base {base['name']!r}", "check the base's config.json"):
        config = AutoConfig.from_pretrained(source, **kwargs)
        if untie:
            config.tie_word_embeddings = False
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_config(config)


def tensor_plan(model, frozen: list[dict], *, lora=None, parent_path: str | None = None,
                lora_dropout: float | None = None, fan_in_fan_out: bool | None = None) -> TensorPlan:
    """Wrap the adapter onto a meta ``model`` and show that the post-training checks will hold."""
    from ..safetensors_meta import read_header

    base_names = set(checks.base_parameters(model))
    wrapped = _wrap_on_meta(model, frozen, lora, parent_path, lora_dropout)
    config = wrapped.peft_config[loading.TRAINED]
    _refuse_lm_head_lora(wrapped)
    if fan_in_fan_out is not None and bool(config.fan_in_fan_out) != fan_in_fan_out:
        raise UsageError(f"fan_in_fan_out={str(fan_in_fan_out).lower()} does not fit this base's layers "
                         f"(PEFT needs {str(bool(config.fan_in_fan_out)).lower()} for them)",
                         "drop fan_in_fan_out: PEFT sets it from the layer type")
    expected = checks.expected_tensors(wrapped, loading.TRAINED, config)
    _agree_with_peft(wrapped, expected)
    _trained_means_saved(wrapped, expected)
    modules = dict(wrapped.named_modules())
    owned = _base_keys(expected, modules)
    covered = set(checks.base_parameters(wrapped, owned))
    if covered != base_names - owned:
        odd = sorted(covered ^ (base_names - owned))[:3]
        raise ConflictError(f"the base fingerprint cannot follow these parameters through PEFT's wrapping: {odd}",
                            "this model/adapter combination is not supported")
    chain_keys = [k for a in frozen for k in read_header(Path(a["path"]) / WEIGHTS_FILE)]
    return TensorPlan(expected, owned, _base_keys(chain_keys, modules), tuple(sorted(covered)))


def _wrap_on_meta(model, frozen, lora, parent_path, lora_dropout):
    """``loading.wrap_for_training`` exactly as training calls it, every new tensor on the meta
    device too (DoRA reads the base weight onto its adapters' device)."""
    import torch

    with refused("PEFT cannot put this adapter on the base", _target_hint(model)), \
            warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        # A copy: PEFT writes into the config it wraps with (paths, expanded targets).
        return loading.wrap_for_training(model, frozen, lora=copy.deepcopy(lora), parent_path=parent_path,
                                         lora_dropout=lora_dropout)


def _trained_means_saved(wrapped, expected: dict) -> None:
    trainable = {checks.saved_key(name, loading.TRAINED) for name, param in wrapped.named_parameters()
                 if param.requires_grad}
    if trainable - set(expected):
        raise ConflictError(f"these parameters would train but not be saved: {sorted(trainable - set(expected))[:3]}",
                            "this combination of LoRA settings is not supported; drop bias or modules_to_save")


def _refuse_lm_head_lora(wrapped) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(wrapped.get_output_embeddings(), BaseTunerLayer):
        raise UsageError("LoRA on lm_head would never train: TRL computes the log-probabilities from "
                         "lm_head.weight directly",
                         "train lm_head in full with modules_to_save=lm_head, or drop it from target_modules")


def _base_keys(keys, modules: dict) -> frozenset[str]:
    """Plain names of the saved keys that are base parameters (trained biases), not LoRA
    tensors and not the full copies of ``modules_to_save``."""
    from peft.utils import ModulesToSaveWrapper

    return frozenset(checks.plain_name(k) for k in keys
                     if not any(m in k for m in ("lora_", "modules_to_save"))
                     and not isinstance(modules.get(k.rsplit(".", 1)[0]), ModulesToSaveWrapper))


def _agree_with_peft(wrapped, expected: dict[str, tuple]) -> None:
    """PEFT's own state dict of the adapter must have exactly the tensors adaptr expects."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(wrapped, adapter_name=loading.TRAINED, save_embedding_layers=False)
    peft_shapes = {k: tuple(v.shape) for k, v in state.items()}
    if peft_shapes != expected:
        diff = sorted(set(peft_shapes) ^ set(expected)) or sorted(
            k for k in expected if peft_shapes[k] != expected[k])
        raise ConflictError(f"adaptr cannot check this adapter: PEFT would save tensors it does not expect "
                            f"({diff[:3]})", "this combination of LoRA settings is not supported")


def _target_hint(model) -> str:
    import torch

    names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) or
                    type(module).__name__ == "Conv1D"})
    return f"this base's layers are named {', '.join(names[:12])}"
