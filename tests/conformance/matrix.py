"""The conformance matrix: LoRA configurations x adaptr operations x model families.

Plain data, importable without torch or pytest: the tests parametrize over :data:`CELLS`, and
``scripts/gen_conformance_docs.py`` renders :func:`table` into docs/conformance.md. Each cell's
expected outcome comes from the rules in :func:`outcome`: it passes (the oracle checks hold), or
adaptr refuses it in the stage's check (exit 2, one line, nothing written), or it does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str
    pair: tuple[str, str]          # two target modules of different shapes
    regex: str                     # a regex matching the same modules (PEFT full-matches it)
    embed: str                     # the input embedding's module name
    tied: bool                     # lm_head shares embed's weight
    conv1d: bool = False           # weights stored (in, out): PEFT's fan_in_fan_out
    note: str = ""


FAMILIES = {
    "llama": Family("llama", ("q_proj", "v_proj"), r".*\.(q_proj|v_proj)", "embed_tokens", tied=False,
                    note="Llama: untied embeddings, no biases"),
    "qwen2": Family("qwen2", ("q_proj", "v_proj"), r".*\.(q_proj|v_proj)", "embed_tokens", tied=True,
                    note="Qwen2: tied embeddings, q/k/v biases"),
    "gpt2": Family("gpt2", ("c_attn", "c_fc"), r".*\.(c_attn|c_fc)", "wte", tied=True, conv1d=True,
                   note="GPT-2: Conv1D layers, tied embeddings, biases everywhere"),
}


@dataclass(frozen=True)
class Config:
    """One LoRA configuration; ``settings(family)`` gives its adaptr / PEFT keys."""

    name: str
    keys: dict = field(default_factory=dict)   # values may name "{pair0}", "{pair1}", "{embed}", "{regex}"
    trained: bool = True       # adaptr can train it (False: the artifact is a PEFT-made import)
    adapter_name: str = "default"
    note: str = ""

    def settings(self, family: Family) -> dict:
        subst = {"{pair0}": family.pair[0], "{pair1}": family.pair[1], "{embed}": family.embed,
                 "{regex}": family.regex}

        def fill(value):
            if isinstance(value, str):
                return subst.get(value, value)
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, dict):
                return {fill(k): v for k, v in value.items()}
            return value

        out = {"target_modules": ["{pair0}", "{pair1}"], **self.keys}
        return {k: fill(v) for k, v in out.items()}


PAIR = ["{pair0}", "{pair1}"]
CONFIGS = [
    Config("list", note="target_modules as a list"),
    Config("regex", {"target_modules": ["{regex}"]}, note="target_modules as a regex"),
    Config("all-linear", {"target_modules": ["all-linear"]}),
    Config("mts-lm_head", {"modules_to_save": ["lm_head"]}, note="modules_to_save=[lm_head]"),
    Config("mts-embed", {"modules_to_save": ["{embed}"]}, note="modules_to_save=[embedding]"),
    Config("bias-lora_only", {"bias": "lora_only"}),
    Config("bias-all", {"bias": "all"}),
    Config("embed-target", {"target_modules": PAIR + ["{embed}"]}, note="LoRA on the input embedding"),
    Config("lm_head-target", {"target_modules": PAIR + ["lm_head"]}, note="LoRA on lm_head"),
    Config("patterns", {"rank_pattern": {"{pair1}": 2}, "alpha_pattern": {"{pair0}": 16}},
           note="rank_pattern + alpha_pattern"),
    Config("dora", {"use_dora": True}),
    Config("rslora", {"use_rslora": True}),
    Config("fan_in_fan_out", {"fan_in_fan_out": True}),
    Config("init-gaussian", {"init_lora_weights": "gaussian"}),
    Config("init-pissa", {"init_lora_weights": "pissa"}),
    Config("init-olora", {"init_lora_weights": "olora"}),
    Config("named", trained=False, adapter_name="custom",
           note="saved by PEFT under adapter name 'custom' (a subfolder); imported"),
]
CONFIG = {c.name: c for c in CONFIGS}

# Operations, in table order, with what each one does.
OPS = {
    "sft": "train a new adapter (sft)",
    "dpo": "train a new adapter (dpo)",
    "continue": "sft --from P --mode continue",
    "dpo-continue": "dpo --from P --mode continue (P's frozen copy is the reference)",
    "stack": "sft --from P --mode stack",
    "merge-mode": "dpo --from P --mode merge (P merged into a derived base)",
    "import": "adaptr import of a PEFT-made adapter directory",
    "merge-into-base": "adaptr merge P --into-base (fp32 and bf16)",
    "weighted-linear": "adaptr merge P C --method linear",
    "weighted-cat": "adaptr merge P C --method cat",
    "export": "adaptr export P (a PEFT directory)",
    "export-stacked": "adaptr export S (S stacked on P)",
    "export-merged": "adaptr export P --merged",
    "export-one-adapter": "adaptr export S --one-adapter (the stack as one PEFT LoRA)",
    "push-pull": "adaptr push P, then adaptr pull into another registry",
    "load": "adaptr.load of P and of S",
}
TRAINING_OPS = ("sft", "dpo", "continue", "dpo-continue", "stack", "merge-mode")
# What each op needs: "P" the parent artifact (trained, else imported), "S" the stacked child,
# "C" P's continued child (a second adapter of the same configuration).
NEEDS = {"continue": "P", "dpo-continue": "P", "stack": "P", "merge-mode": "P", "merge-into-base": "P",
         "weighted-linear": "PC", "weighted-cat": "PC", "export": "P", "export-stacked": "PS",
         "export-one-adapter": "PS",
         "export-merged": "P", "push-pull": "P", "load": "PS"}


@dataclass(frozen=True)
class Outcome:
    kind: str            # "pass" | "refused" | "n/a"
    reason: str = ""     # refused: a substring of the one-line error; n/a: why


def _refusal(family: Family, config: Config, op: str) -> str | None:
    """The error a cell must be refused with before any work, or None.

    For the operations that start from P, the settings are P's: a PEFT-made P (imported) has
    what PEFT wrote, which for ``fan_in_fan_out`` is the value that fits the layers.
    """
    keys = config.settings(family)
    new = op in ("sft", "dpo")
    if str(keys.get("init_lora_weights")) in ("pissa", "olora") and (new or op == "import"):
        return "rewrites the base weights"
    if new and keys.get("fan_in_fan_out") and not family.conv1d:
        return "fan_in_fan_out=true does not fit"
    if keys.get("bias", "none") != "none" and op in ("dpo", "dpo-continue", "merge-mode"):
        return "dpo with bias="
    if op == "stack" and keys.get("use_dora"):
        return "--mode stack with DoRA"
    if op == "stack" and keys.get("modules_to_save"):
        return "--mode stack with modules_to_save"
    if op == "stack" and keys.get("bias", "none") != "none":
        return "--mode stack with trained biases"
    if op in TRAINING_OPS and "lm_head" in keys["target_modules"]:
        return "LoRA on lm_head would never train"
    if op in ("weighted-linear", "weighted-cat"):
        return _weighted_refusal(keys, op)
    return None


def _weighted_refusal(keys: dict, op: str) -> str | None:
    if keys.get("use_dora"):
        return "DoRA adapter"
    if keys.get("modules_to_save"):
        return "both train a full copy"
    if keys.get("bias", "none") != "none":
        return "trains biases"
    if op == "weighted-linear" and keys.get("rank_pattern"):
        return "needs adapters of one rank"
    return None


def _available(family: Family, config: Config, artifact: str) -> bool:
    """Whether artifact P/C/S can be made for this cell (trained, or imported from PEFT)."""
    if artifact == "P":
        trainable = config.trained and _refusal(family, config, "sft") is None
        return trainable or _refusal(family, config, "import") is None
    op = {"C": "continue", "S": "stack"}[artifact]
    return _available(family, config, "P") and _refusal(family, config, op) is None


def outcome(family_name: str, config_name: str, op: str) -> Outcome:
    family, config = FAMILIES[family_name], CONFIG[config_name]
    if op in ("sft", "dpo") and not config.trained:
        return Outcome("n/a", "adaptr trains under its own adapter name")
    missing = [a for a in NEEDS.get(op, "") if not _available(family, config, a)]
    if missing:
        return Outcome("n/a", f"no {'/'.join(missing)} of this configuration can exist")
    reason = _refusal(family, config, op)
    return Outcome("refused", reason) if reason else Outcome("pass")


@dataclass(frozen=True)
class Cell:
    family: str
    config: str
    op: str

    def __str__(self) -> str:
        return f"{self.family}-{self.config}-{self.op}"

    @property
    def expected(self) -> Outcome:
        return outcome(self.family, self.config, self.op)


ALL_CELLS = [Cell(f, c.name, op) for f in FAMILIES for c in CONFIGS for op in OPS]
CELLS = [cell for cell in ALL_CELLS if cell.expected.kind != "n/a"]


def counts() -> dict[str, int]:
    out = {"pass": 0, "refused": 0, "n/a": 0}
    for cell in ALL_CELLS:
        out[cell.expected.kind] += 1
    return out


def table() -> str:
    """docs/conformance.md: one table per family, configurations down, operations across."""
    marks = {"pass": "pass", "refused": "refused", "n/a": "—"}
    total = counts()
    lines = [
        "# Conformance matrix", "",
        "<!-- generated by scripts/gen_conformance_docs.py from tests/conformance/matrix.py; "
        "tests/conformance/test_table.py checks it -->", "",
        "Every LoRA configuration below, on every model family, through every adaptr operation, "
        "checked against plain PEFT and transformers (never adaptr's own loaders): `pass` means the "
        "oracle checks hold; `refused` means the stage's check refuses it before any work "
        "(exit 2, one line with a hint, no run row, no run directory); `—` means the cell cannot "
        "exist (for example, no adapter of that configuration can be made to continue from).", "",
        f"Cells: **{total['pass']} pass**, **{total['refused']} refused up front**, "
        f"**0 fail after training**; {total['n/a']} do not apply.", "",
        "Oracles: a published adapter loaded with `PeftModel.from_pretrained` gives the logits of "
        "the model as it stood at the end of training, and so does `adaptr.load` (fp32, ≤ 1e-6); a "
        "continued version starts from its parent's exact tensors; merges equal "
        "`merge_and_unload` (fp32 ≤ 1e-6, bf16 ≤ 1 ulp) and keep the adapted model's logits; "
        "weighted merges equal PEFT's `add_weighted_adapter`; exports load with plain PEFT (a stack "
        "exported as one adapter gives the stack's logits, fp32 ≤ 1e-5); a "
        "pushed and pulled version has the same files.", "",
        "## Operations", "", "| op | what |", "|---|---|",
        *[f"| `{op}` | {what} |" for op, what in OPS.items()], "",
    ]
    for family in FAMILIES.values():
        lines += [f"## {family.name}", "", family.note + ".", "",
                  "| configuration | " + " | ".join(f"`{op}`" for op in OPS) + " |",
                  "|---|" + "---|" * len(OPS)]
        for config in CONFIGS:
            row = [marks[outcome(family.name, config.name, op).kind] for op in OPS]
            lines.append(f"| `{config.name}` | " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Refused up front", "",
              "Each refusal is one line on stderr with a hint, exit code 2, nothing written.", "",
              "| configuration | operations (families) | the error says |", "|---|---|---|"]
    refusals: dict[tuple[str, str], dict[str, list[str]]] = {}
    for cell in ALL_CELLS:
        if cell.expected.kind == "refused":
            ops = refusals.setdefault((cell.config, cell.expected.reason), {})
            ops.setdefault(cell.op, []).append(cell.family)
    for (config, reason), ops in refusals.items():
        where = ", ".join(f"`{op}` ({'/'.join(fams)})" for op, fams in ops.items())
        lines.append(f"| `{config}` | {where} | {reason} |")
    lines.append("")
    return "\n".join(lines)
