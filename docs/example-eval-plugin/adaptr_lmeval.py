"""An outside evaluator plugin: lm-evaluation-harness on a local task file (see docs/evaluations.md).

Register it with an entry point (``[project.entry-points.adaptr] lmeval = "adaptr_lmeval"``) or, to
try it, ``ADAPTR_EXTRA_PLUGINS=adaptr_lmeval`` with this directory on ``PYTHONPATH``. ``--data`` is
the task's YAML file; its ``dataset_path``/``dataset_kwargs`` should name local files
(``dataset_path: json`` with ``dataset_kwargs: {data_files: {test: items.jsonl}}``), so the
harness downloads nothing. Untested in adaptr's suite (see docs/evaluations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptr import Evaluator, UsageError, hookimpl

METRICS = {"acc": True, "acc_norm": True, "exact_match": True, "f1": True, "bleu": True,
           "word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}


@dataclass
class LmEvalSettings:
    batch_size: int = field(default=8, metadata={"help": "Requests per forward pass (HFLM batch_size)."})
    num_fewshot: int = field(default=0, metadata={"help": "Few-shot examples per request."})
    limit: int = field(default=None, metadata={"help": "Evaluate only the first N documents."})


def check(job) -> None:
    import yaml

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UsageError("the lmeval evaluator needs lm-evaluation-harness", "pip install lm-eval") from None
    try:
        task = yaml.safe_load(job.data_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{job.data_path}: not a readable task YAML ({exc})", "pass an lm-eval task file") from None
    if not isinstance(task, dict) or "task" not in task:
        raise UsageError(f"{job.data_path}: no `task:` name", "see lm-eval's docs/task_guide.md")
    job.data = task


def run(job) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from adaptr import load
    from adaptr.trl_stage import load_tokenizer

    manager = TaskManager(include_path=str(job.data_path.parent))
    job.start(len(job.pending), f"lm-eval {job.data['task']}")
    for target in job.pending:
        model = HFLM(pretrained=load(target.node["ref"], registry=job.registry),
                     tokenizer=load_tokenizer(target.base), batch_size=job.settings.batch_size)
        output = simple_evaluate(model=model, tasks=[job.data["task"]], task_manager=manager,
                                 num_fewshot=job.settings.num_fewshot, limit=job.settings.limit)
        scores = output["results"][job.data["task"]]
        metrics = {name.split(",")[0]: float(value) for name, value in scores.items()
                   if name.split(",")[0] in METRICS and isinstance(value, (int, float))}
        job.add_result(target, metrics, record={"lm_eval_version": output.get("lm_eval_version")})
        job.advance()


@hookimpl
def register_evaluators(register):
    register(Evaluator("lmeval", LmEvalSettings, check=check, run=run, metrics=METRICS,
                       help="lm-evaluation-harness on a local task YAML file."))
