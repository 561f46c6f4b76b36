"""The paper's real VQA benchmarks through lmms-eval's own task definitions (Table 9: VQAv2, GQA, SQA-I, MME,
BLINK relative depth; Table 21: MMMU, RealWorldQA, OCRBench, DocVQA, BLINK, MUIRBench, ERQA), and ``vqa.lmms``
for any other lmms-eval task (``protocol.task``).

The data must be local (HF offline; README: pre-populated datasets cache or a copied YAML on local files via
``protocol.include_path``): the task is loaded before the VLM is trained, and a task whose data cannot be
loaded offline stops the run with that reason. The VLM is trained on the world's conversations unless
``protocol.train_data`` names a folder with ``stage1.jsonl`` / ``stage2.jsonl`` (paper: BLIP-558K and
LLaVA-665K). Per-sample records are logged where the task's aggregate is the mean of its per-sample scores
(exact match, accuracy); MME's score is a sum of per-category scores and has none. No floor: these tasks
ship no training split to take a majority answer from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import field
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, SuiteResult, SuiteSpec

from .lmms_tasks import check_task, evaluate, offline_env, task_manager
from .suite import VQAOptions, _VQABase
from .tasks import VQADataError

# suite -> (lmms-eval task, its headline metric, paper table)
BENCHMARKS = {
    "vqa.vqav2": ("vqav2_val", "exact_match", "Table 9"),
    "vqa.gqa": ("gqa", "exact_match", "Table 9"),
    "vqa.sqa_img": ("scienceqa_img", "exact_match", "Table 9"),
    "vqa.mme": ("mme", "mme_perception_score", "Table 9"),
    "vqa.blink_depth": ("blink_relative_depth", "blink_acc", "Table 9"),
    "vqa.mmmu": ("mmmu_val", "mmmu_acc", "Table 21"),
    "vqa.realworldqa": ("realworldqa", "exact_match", "Table 21"),
    "vqa.ocrbench": ("ocrbench", "ocrbench_accuracy", "Table 21"),
    "vqa.docvqa": ("docvqa_val", "anls", "Table 21"),
    "vqa.blink": ("blink", "blink_acc", "Table 21"),
    "vqa.muirbench": ("muirbench", "muirbench_score_overall", "Table 21"),
    "vqa.erqa": ("erqa", "erqa_acc", "Table 21"),
}


@dataclass(frozen=True)
class LmmsOptions(VQAOptions):
    task: str = field("", help="lmms-eval task name (vqa.lmms; the benchmark suites fix it)")
    include_path: str = field("", help="extra folder of lmms-eval task YAMLs (e.g. copies pointing at local data)")
    train_data: str = field("", help="folder with stage1.jsonl + stage2.jsonl to train the VLM (default: the "
                            "world's local conversations)")


class LmmsTaskSuite(_VQABase):
    """Any lmms-eval task through its own YAML."""
    Options = LmmsOptions
    embedded_default = False     # the questions come from lmms-eval's loaders, never from the world
    task_name = ""            # fixed by the benchmark suites
    metric = ""
    spec = SuiteSpec(name="vqa.lmms", version="1", task="vqa", heads=("vlm",),
                     metrics=(MetricSpec("score", "max", "the task's headline metric"),), primary="score",
                     paper_table="Table 9 / Table 21", description="any lmms-eval task (protocol.task) on local data")

    @property
    def lmms_task(self) -> str:
        return self.task_name or self.options.task

    def dataset_fingerprint(self, data: Path) -> str:
        return f"lmms:{self.lmms_task}:{self.options.include_path}:{self.options.train_data}"

    def _manager(self):
        o = self.options
        if not self.lmms_task:
            raise VQADataError("vqa.lmms needs protocol.task=<lmms-eval task name>")
        manager = task_manager(Path(o.include_path).expanduser() if o.include_path else None, defaults=True)
        check_task(self.lmms_task, manager)
        return manager

    def _check_data(self, manager) -> None:
        """Load the task's documents now (offline): missing data stops here, before a VLM is trained."""
        from lmms_eval.tasks import get_task_dict
        try:
            get_task_dict([self.lmms_task], manager)
        except Exception as e:          # datasets raises many types offline (ConnectionError, FileNotFound...)
            raise VQADataError(f"lmms-eval task '{self.lmms_task}': its data is not available offline "
                               f"({type(e).__name__}: {str(e)[:300]}); see suites/vqa/README.md, 'Real "
                               f"benchmarks'") from None

    def train_root(self, ctx: RunContext) -> Path:
        if self.options.train_data:
            root = Path(self.options.train_data).expanduser()
            if not (root / "stage1.jsonl").is_file() or not (root / "stage2.jsonl").is_file():
                raise VQADataError(f"protocol.train_data='{root}' needs stage1.jsonl and stage2.jsonl")
            return root.parent if root.name == "train" else root
        self.task = "blink_depth_local"           # the world's generated folder holds the training conversations
        return self.task_root(ctx.data, ctx.workspace)

    def run(self, ctx: RunContext) -> SuiteResult:
        offline_env(ctx.workspace.cache)
        manager = self._manager()
        self._check_data(manager)
        t0 = time.perf_counter()
        model, info = self.trained_model(ctx, self.train_root(ctx))
        t1 = time.perf_counter()
        out = evaluate(model, [self.lmms_task], manager, limit=self.options.limit)
        res = out["results"].get(self.lmms_task, {})
        metrics = {k.split(",")[0]: float(v) for k, v in res.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        key = self.metric or next((k for k in metrics if "stderr" not in k), "")
        if key not in metrics:
            raise VQADataError(f"lmms-eval task '{self.lmms_task}' reported no '{key}' ({', '.join(metrics)})")
        metrics["score"] = metrics[key]
        metrics.update(vlm_train_s=t1 - t0, lmms_eval_s=time.perf_counter() - t1)
        per_sample = {}
        samples = out.get("samples", {}).get(self.lmms_task, [])
        vals = [s.get(key) for s in samples]
        if samples and all(isinstance(v, (int, float)) for v in vals) and \
                np.isclose(np.mean(vals), metrics["score"], rtol=1e-4):
            per_sample["score"] = PerSample([f"{self.lmms_task}/{s['doc_id']}" for s in samples], np.asarray(vals))
        return SuiteResult(metrics=metrics, selection={"vlm": info["key"], "lmms_task": self.lmms_task,
                                                       "metric": key},
                           details={"lmms_eval": metrics, "vlm": info}, per_sample=per_sample)

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        return {k: v for k, v in super().demo_protocol(preset).items()}


def _benchmark(name: str, task: str, metric: str, table: str) -> type:
    spec = SuiteSpec(name=name, version="1", task="vqa", heads=("vlm",),
                     metrics=(MetricSpec("score", "max", f"lmms-eval {task}: {metric}"),), primary="score",
                     paper_table=table, description=f"lmms-eval task {task} ({metric}); data must be local")
    return type(name.split(".")[1].title().replace("_", "") + "Suite", (LmmsTaskSuite,),
                {"spec": spec, "task_name": task, "metric": metric, "__module__": __name__})


SUITE_CLASSES = {name: _benchmark(name, *v) for name, v in BENCHMARKS.items()}
Vqav2Suite, GqaSuite, SqaImgSuite, MmeSuite, BlinkDepthSuite, MmmuSuite, RealworldqaSuite, OcrbenchSuite, \
    DocvqaSuite, BlinkSuite, MuirbenchSuite, ErqaSuite = SUITE_CLASSES.values()
