"""The public merge API: the streaming merge of LoRA adapters into a base, and their chains.

For plugins (the built-in `merge` stage and `adaptr export` among them); the implementation is
adaptr/hf/merge.py. Planning reads safetensors headers only, so every check runs before a write.
"""

from .hf.concat import write_one_adapter
from .hf.loading import peft_names, peft_snippet
from .hf.merge import (check_into_base, merge_adapter_into_base, merge_chain, plan_for_adapter, plan_merge,
                       read_adapter_config, write_merged_model)
from .peftdir import portable_config
from .safetensors_meta import OUTPUT_DTYPES, normalize_dtype

__all__ = ["OUTPUT_DTYPES", "check_into_base", "merge_adapter_into_base", "merge_chain", "normalize_dtype",
           "peft_names", "peft_snippet", "plan_for_adapter", "plan_merge", "portable_config",
           "read_adapter_config", "write_merged_model", "write_one_adapter"]
