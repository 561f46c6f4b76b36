"""lmms-eval task folders for the local tasks, and lmms-eval's task index for the real benchmarks.

A local task folder holds ``<task>.yaml`` (``dataset_path: json`` on the local JSONL, so ``datasets`` reads it
offline) and ``utils.py`` binding :func:`suites.vqa.taskfns.make` to the data root, tolerance and judge.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from harness.errors import UserError

from .tasks import TASKS, VQADataError

KIND = {"blink_depth_local": "choice", "spatialrgpt_qual_local": "qualitative",
        "spatialrgpt_quant_local": "quantitative"}


class UnknownTaskError(UserError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def offline_env(cache_dir: Path) -> None:
    """No network at run time: HF hub / datasets offline, datasets' cache inside the workspace. Set before
    lmms-eval (and with it ``datasets``) is imported; values the user set are kept."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_CACHE", str(Path(cache_dir) / "hf_datasets"))


def write_task(task: str, data_root: Path, out: Path, tolerance: float = 0.25, judge: str = "rule",
               limit: int | None = None) -> Path:
    """The lmms-eval folder of local ``task`` reading ``data_root/<task>.jsonl``; returns ``out``."""
    if task not in KIND:
        close = difflib.get_close_matches(task, TASKS, n=3, cutoff=0.4)
        raise UnknownTaskError(f"unknown local VQA task '{task}'. Did you mean: {', '.join(close) or '-'}? "
                               f"Known: {', '.join(TASKS)}")
    jsonl = Path(data_root) / f"{task}.jsonl"
    if not jsonl.is_file():
        raise VQADataError(f"local VQA dataset '{jsonl}' does not exist (generate it with the suite's default data "
                           f"or pass --data to a folder holding {task}.jsonl and images/)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = KIND[task]
    lines = [f"task: {task}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             f"    test: {jsonl.resolve()}", "test_split: test",
             "doc_to_visual: !function utils.doc_to_visual", "doc_to_text: !function utils.doc_to_text",
             "doc_to_target: !function utils.doc_to_target"]
    if kind == "choice":
        lines += ["output_type: multiple_choice", "doc_to_choice: !function utils.doc_to_choice",
                  "metric_list:", "  - metric: acc", "    aggregation: mean", "    higher_is_better: true"]
    else:
        lines += ["output_type: generate_until", "generation_kwargs:", "  max_new_tokens: 24",
                  "  until: ['\\n']", "  do_sample: false", "process_results: !function utils.process_results",
                  "metric_list:", "  - metric: acc", "    aggregation: mean", "    higher_is_better: true"]
    (out / f"{task}.yaml").write_text("\n".join(lines) + "\n")
    (out / "utils.py").write_text(
        "from suites.vqa.taskfns import make\n"
        f"globals().update(make({str(Path(data_root).resolve())!r}, {kind!r}, {float(tolerance)!r}, {judge!r}))\n")
    return out


def task_manager(include_path: Path | None, defaults: bool):
    from lmms_eval.tasks import TaskManager
    import sys
    from loguru import logger
    logger.remove()                     # lmms-eval logs every unparsable YAML of its index at DEBUG
    logger.add(sys.stderr, level="WARNING")
    return TaskManager("WARNING", include_path=str(include_path) if include_path else None,
                       include_defaults=defaults)


def check_task(name: str, manager) -> None:
    """Unknown lmms-eval task name -> UserError listing the close names."""
    if name not in manager.all_tasks:
        close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.5)
        raise UnknownTaskError(f"unknown lmms-eval task '{name}'. Did you mean: {', '.join(close) or '-'}? "
                               f"({len(manager.all_tasks)} tasks indexed)")


def evaluate(model, task_names: list[str], manager, limit: int | None = None) -> dict:
    """lmms-eval's evaluator, in-process, on an lmms instance; per-sample logs kept, no bootstrap.

    lmms-eval 0.7.3 patches ``filelock._api.FileLockMeta`` (filelock 3.x internals) before loading datasets, to
    share lock instances across ranks that load the same dataset; filelock 4 has no ``_api`` module. One
    process loads its local JSONL here, so the patch has nothing to do: we mark it applied (the function's own
    guard) instead of downgrading filelock for the whole environment."""
    import lmms_eval.evaluator as ev
    ev._enable_reentrant_filelocks._patched = True
    return ev.simple_evaluate(model=model, tasks=list(task_names), task_manager=manager, log_samples=True,
                              bootstrap_iters=0, batch_size=1, limit=limit, verbosity="WARNING",
                              process_docs_parallel=1)
