"""Tiny causal LMs (Llama, Qwen2, GPT-2 shapes) and a byte-level BPE tokenizer, made in-process.

Used by `adaptr demo` and the tests. Deterministic: the same seed gives the same weights.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Adapters are small sets of weights trained on top of a frozen base model.",
    "LoRA adds a low rank update to each target matrix of the model.",
    "Write a short answer. Yes, the answer is correct and helpful.",
    "Question: what is the capital of France? Answer: Paris.",
    "<|user|> <|assistant|> <|system|> user assistant system",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) , . ? ! : ; ' \"",
]


def make_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_base(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64,
                   num_layers: int = 2, max_shard_size: str | None = None, family: str = "llama") -> Path:
    """Write a tiny causal LM (safetensors) and its tokenizer to ``out_dir``.

    ``family`` picks the shape: ``llama`` (untied embeddings, no biases), ``qwen2`` (tied
    embeddings, q/k/v biases) or ``gpt2`` (Conv1D layers, tied embeddings, biases everywhere).
    """
    import torch

    out_dir = Path(out_dir)
    tokenizer = make_tokenizer()
    model_class, config = FAMILIES[family](tokenizer, hidden_size, num_layers)
    torch.manual_seed(seed)
    model = model_class(config)
    _nonzero_biases(model, seed)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for a 0.5 MB file is noise
    try:
        model.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _nonzero_biases(model, seed: int) -> None:
    """Freshly initialised biases are zeros; a test of bias handling needs them to matter."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _token_ids(tokenizer) -> dict:
    return {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def _llama(tokenizer, hidden_size: int, num_layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM, LlamaConfig(
        hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, **_token_ids(tokenizer))


def _qwen2(tokenizer, hidden_size: int, num_layers: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM, Qwen2Config(
        hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, **_token_ids(tokenizer))


def _gpt2(tokenizer, hidden_size: int, num_layers: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = _token_ids(tokenizer)
    return GPT2LMHeadModel, GPT2Config(
        n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=512, tie_word_embeddings=True,
        **ids)


FAMILIES = {"llama": _llama, "qwen2": _qwen2, "gpt2": _gpt2}
