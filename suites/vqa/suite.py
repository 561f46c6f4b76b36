"""``vqa.<task>``: VLM question answering through lmms-eval (paper App. B.1 Table 9, App. F.6 Table 21).

Per encoder (frozen): the SpatialBoost trainer's stages 1-2 train a LLaVA-1.5 VLM (2-layer MLP projector,
then projector + LM) on the world's train-split conversations (:mod:`.vlm_cache`, trained once per key);
lmms-eval's evaluator then runs the task in-process on the plugin model (:mod:`.plugin`), with per-sample logs.
Local tasks (:mod:`.tasks`): ``vqa.blink_depth_local``, ``vqa.spatialrgpt_qual_local``,
``vqa.spatialrgpt_quant_local``; ``vqa.lmms`` runs any lmms-eval task (``protocol.task``) whose data the user
has locally (lmms-eval's own YAML, HF offline).

Metrics: ``acc`` (fraction correct: exact choice, rule-judged relation, or within ``tolerance`` for
quantities), with its PerSample keyed by the doc id; floor ``floor.acc``: the train split's majority answer
(per question type; quantities: the train median of the type), judged the same way; ``floor_cue.acc`` (depth and
qualitative tasks): a 2D shortcut that only finds the marks in the image (the lower circle is closer, box
centres and areas; :func:`.tasks.cue_answer`), the score an encoder that gives the VLM position and colour but
no depth or 3D could reach.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.config import field
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec

from .judge import judge_choice, judge_quantity
from .lmms_tasks import KIND, check_task, evaluate, offline_env, task_manager, write_task
from .tasks import GEN_VERSION, GenOptions, VQADataError, cue_answer, generate, read_docs
from .vlm_cache import VLMRecipe, file_digest, train_or_load


@dataclass(frozen=True)
class VQAOptions:
    lm: str = field("builtin:smollm2-135m", help="the VLM's LM: builtin:smollm2-135m, builtin:tiny-qwen2 (random, "
                    "tests) or a local HF causal-LM folder (paper: Vicuna-1.5-7B / Qwen2-7B)")
    feature_layer: int = field(-2, help="encoder block whose patch tokens are the visual tokens (LLaVA-1.5: -2)")
    image_size: int = field(0, min=0, help="VLM input resolution (0 = the encoder's default)")
    stage1_steps: int = field(0, min=0, help="stage-1 optimiser steps (0 = one epoch, the paper)")
    stage1_batch: int = field(256, min=1, help="stage-1 global batch (paper: 256)")
    stage1_lr: float = field(2e-3, min=0, min_open=True, help="stage-1 peak lr (paper: 2e-3)")
    stage2_steps: int = field(0, min=0, help="stage-2 optimiser steps (0 = one epoch, the paper)")
    stage2_batch: int = field(128, min=1, help="stage-2 global batch (paper: 128)")
    stage2_lr: float = field(2e-5, min=0, min_open=True, help="stage-2 peak lr (LLaVA-1.5: 2e-5)")
    micro_batch: int = field(4, min=1, help="samples per forward (gradient accumulation fills the batch; on a GPU "
                             "set it to the batch: small micro-batches leave it waiting on Python)")
    grad_checkpointing: Literal["auto", "on", "off"] = field("auto", hash=False,
                                    help="LM activation checkpointing in VLM training (speed/memory only): auto = "
                                    "on CUDA (memory for 7B LMs); off is faster for small LMs")
    prefetch_steps: int | None = field(None, min=0, hash=False, help="VLM training: steps whose batches (image "
                                       "decoding) are built in background threads ahead of the step (speed only; "
                                       "None = auto: 2 on CUDA, 0 on CPU)")
    max_length: int = field(2048, min=16, help="context length in tokens (visual tokens included)")
    limit: int | None = field(None, min=1, help="evaluate at most the first N docs (None = all)")
    tolerance: float = field(0.25, min=0, min_open=True, help="quantitative success: relative error <= this "
                             "(SpatialRGPT: 25 %)")
    judge: str = field("rule", nonempty=True, help="rule, or openai:URL#MODEL[#KEY_ENV] (an OpenAI-compatible "
                       "chat endpoint as the judge, SpatialRGPT's GPT-4 protocol)")
    max_new_tokens: int = field(24, min=1, help="generation cap of free-form answers")
    depth_pairs: int = field(6, min=1, help="local data: relative-depth questions per view")
    object_pairs: int = field(3, min=1, help="local data: object pairs per view")
    seed: int = field(0, help="VLM initialisation and data order")


def _spec(name: str, table: str, desc: str) -> SuiteSpec:
    # version 2: the 2D-shortcut floor is logged as floor_cue.acc (a floor kind the reports show), was floor.cue
    return SuiteSpec(name=name, version="2", task="vqa", heads=("vlm",),
                     metrics=(MetricSpec("acc", "max", "fraction of questions answered correctly"),),
                     primary="acc", paper_table=table, description=desc)


class _VQABase(Suite):
    Options = VQAOptions
    task = ""

    # ------------------------------------------------------------------------------------------- data
    def gen_options(self) -> GenOptions:
        o = self.options
        return GenOptions(depth_pairs=o.depth_pairs, object_pairs=o.object_pairs, seed=0)

    def default_data(self, workspace) -> Path:
        from suites.synthetic.defaults import spatial_annotations_root
        return spatial_annotations_root(workspace)

    def task_root(self, data: Path, workspace) -> Path:
        """The generated task folder: ``data`` itself when it holds ``<task>.jsonl`` + ``train/``, else the
        tasks generated from ``data``'s spatial annotations into the workspace."""
        data = Path(data)
        if (data / f"{self.task}.jsonl").is_file():
            return data
        if not (data / "annotations.jsonl").is_file():
            raise VQADataError(f"--data '{data}' holds neither {self.task}.jsonl (a local VQA task folder) nor "
                               f"annotations.jsonl (the world's spatial layout to generate it from)")
        key = file_digest(data / "annotations.jsonl")[:12] + f"-{GEN_VERSION}-{self.options.depth_pairs}" \
                                                               f"-{self.options.object_pairs}"
        return generate(data, Path(workspace.data) / f"vqa-{key}", self.gen_options())

    def dataset_fingerprint(self, data: Path) -> str:
        data = Path(data)
        files = [data / f"{self.task}.jsonl"] if (data / f"{self.task}.jsonl").is_file() else \
            [data / "annotations.jsonl"]
        if not files[0].is_file():
            raise VQADataError(f"--data '{data}' holds neither {self.task}.jsonl (a local VQA task folder) nor "
                               f"annotations.jsonl (the world's spatial layout to generate it from)")
        return f"{file_digest(*files)}-g{GEN_VERSION}-{self.options.depth_pairs}-{self.options.object_pairs}"

    # ------------------------------------------------------------------------------------------- VLM
    def recipe(self, precision: str) -> VLMRecipe:
        o = self.options
        return VLMRecipe(lm=o.lm, feature_layer=o.feature_layer, image_size=o.image_size,
                         stage1_steps=o.stage1_steps, stage1_batch=o.stage1_batch, stage1_lr=o.stage1_lr,
                         stage2_steps=o.stage2_steps, stage2_batch=o.stage2_batch, stage2_lr=o.stage2_lr,
                         micro_batch=o.micro_batch, max_length=o.max_length, seed=o.seed,
                         precision="bf16" if precision == "bf16" else "fp32")

    def trained_model(self, ctx: RunContext, root: Path):
        """(lmms-eval model instance, training info): the plugin class resolved through lmms-eval's registry."""
        from lmms_eval.models import get_model
        vlm, info = train_or_load(ctx.encoder, self.recipe(ctx.precision), root / "train" / "stage1.jsonl",
                                  root / "train" / "stage2.jsonl", ctx.workspace, device=str(ctx.device),
                                  echo=lambda s: None, grad_checkpointing=self.options.grad_checkpointing,
                                  prefetch_steps=self.options.prefetch_steps,
                                  progress=ctx.progress)
        for stage, losses in info["losses"].items():
            for step, loss in enumerate(losses):
                ctx.log_curve({f"vlm.stage{stage}.loss": float(loss)}, step)
        cls = get_model("spatialboost_vlm")
        return cls.from_vlm(vlm, image_size=self.options.image_size, device=str(ctx.device),
                            max_new_tokens=self.options.max_new_tokens,
                            precision=self.recipe(ctx.precision).precision), info

    # ------------------------------------------------------------------------------------------- run
    def run(self, ctx: RunContext) -> SuiteResult:
        offline_env(ctx.workspace.cache)
        root = self.task_root(ctx.data, ctx.workspace)
        t0 = time.perf_counter()
        model, info = self.trained_model(ctx, root)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vqa-tasks-") as tmp:
            write_task(self.task, root, Path(tmp) / self.task, self.options.tolerance, self.options.judge)
            manager = task_manager(Path(tmp), defaults=False)
            out = evaluate(model, [self.task], manager, limit=self.options.limit)
        t2 = time.perf_counter()
        samples = sorted(out["samples"][self.task], key=lambda s: s["doc_id"])
        ids = [s["doc"]["id"] for s in samples]
        score = np.array([float(s["acc"]) for s in samples])
        floor, floor_desc = self.floor([s["doc"] for s in samples], root)
        cue = self.cue_floor([s["doc"] for s in samples])
        acc = float(score.mean())
        rows = [{"id": s["doc"]["id"], "question": s["doc"]["question"], "target": s["target"],
                 "response": _response(s), "acc": float(s["acc"]), "floor": float(f)}
                for s, f in zip(samples, floor)]
        if ctx.logger is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / f"{self.task}.jsonl"
                p.write_text("".join(json.dumps(r) + "\n" for r in rows))
                ctx.logger.log_artifact(p, "lmms_eval_samples")
        lmms_metrics = {k.split(",")[0]: v for k, v in out["results"][self.task].items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics = {"acc": acc, "floor.acc": float(np.mean(floor)), "n": float(len(ids)),
                   "vlm_train_s": t1 - t0, "lmms_eval_s": t2 - t1}
        per_sample = {"acc": PerSample(ids, score, columns=("correct",)),
                      "floor.acc": PerSample(ids, np.asarray(floor, dtype=float), columns=("correct",))}
        if cue is not None:
            metrics["floor_cue.acc"] = float(np.mean(cue))
            per_sample["floor_cue.acc"] = PerSample(ids, np.asarray(cue, dtype=float), columns=("correct",))
        return SuiteResult(
            metrics=metrics,
            selection={"vlm": info["key"], "lm": self.options.lm, "feature_layer": self.options.feature_layer},
            details={"floors": {"floor": floor_desc, "floor_cue": None if cue is None else "2D shortcut (tasks.cue_answer)"},
                     "lmms_eval": lmms_metrics, "vlm": info, "samples": rows[:50]},
            per_sample=per_sample)

    def floor(self, docs: list[dict], root: Path) -> tuple[list[float], str]:
        """The train split's majority answer per question type, judged like the model's answers."""
        train = read_docs(root / "train" / f"{self.task}.jsonl")
        kind = KIND[self.task]
        by_type: dict[str, list] = {}
        for d in train:
            by_type.setdefault(d["qtype"], []).append(
                d["answer_index"] if kind == "choice" else d["target_value"] if kind == "quantitative"
                else d["answer"])
        if kind == "quantitative":
            ref = {t: statistics.median(v) for t, v in by_type.items()}
            return [judge_quantity(f"{ref.get(d['qtype'], 0.0):.2f} m", d["target_value"], self.options.tolerance)
                    for d in docs], "train median of the quantity type"
        ref = {t: Counter(v).most_common(1)[0][0] for t, v in by_type.items()}
        if kind == "choice":
            return [float(ref.get(d["qtype"], 0) == d["answer_index"]) for d in docs], "majority train answer"
        return [judge_choice(str(ref.get(d["qtype"], "")), d["target"], tuple(d["options"])) for d in docs], \
            "majority train answer per relation"

    def cue_floor(self, docs: list[dict]) -> list[float] | None:
        """Per doc, 1 if the 2D shortcut (:func:`.tasks.cue_answer`) is right; None when the task has no such cue."""
        cues = [cue_answer(d) for d in docs]
        if not docs or any(c is None for c in cues):
            return None
        key = "answer_index" if KIND[self.task] == "choice" else "target"
        return [float(c == d[key]) for c, d in zip(cues, docs)]

    def validate(self, ctx: RunContext) -> dict:
        root = self.task_root(ctx.data, ctx.workspace)
        docs = read_docs(root / f"{self.task}.jsonl")
        out = {"task": self.task, "docs": len(docs),
               "train_conversations": len(read_docs(root / "train" / "stage2.jsonl")),
               "floor.acc": float(np.mean(self.floor(docs, root)[0]))}
        cue = self.cue_floor(docs)
        if cue is not None:
            out["floor_cue.acc"] = float(np.mean(cue))
        return out

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        if preset == "tiny":
            return {"lm": "builtin:tiny-qwen2", "stage1_steps": 2, "stage1_batch": 4, "stage2_steps": 2,
                    "stage2_batch": 4, "micro_batch": 4, "limit": 5, "depth_pairs": 2, "object_pairs": 1,
                    "image_size": 32, "max_new_tokens": 8}
        return {"stage1_steps": 0, "stage1_batch": 16, "stage2_steps": 0, "stage2_batch": 8, "micro_batch": 4,
                "stage2_lr": 1e-4, "image_size": 112}


def _response(sample: dict):
    r = sample.get("filtered_resps")
    return r[0] if isinstance(r, list) and len(r) == 1 else r


class BlinkDepthLocalSuite(_VQABase):
    task = "blink_depth_local"
    spec = _spec("vqa.blink_depth_local", "Table 9", "BLINK-style relative depth on the world: two marked points, "
                 "which is closer (multiple choice by log-likelihood, lmms-eval)")


class SpatialRGPTQualLocalSuite(_VQABase):
    task = "spatialrgpt_qual_local"
    spec = _spec("vqa.spatialrgpt_qual_local", "Table 9", "SpatialRGPT-style qualitative relations on the world "
                 "(left/right, above/below, bigger/smaller), rule judge")


class SpatialRGPTQuantLocalSuite(_VQABase):
    task = "spatialrgpt_quant_local"
    spec = _spec("vqa.spatialrgpt_quant_local", "Table 9", "SpatialRGPT-style quantities on the world (distance, "
                 "width, height in m), success within 25 %")
