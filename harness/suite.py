"""What a suite is: a small typed spec plus a class with the logic (lm-eval tasks, big_vision evaluators).

A suite declares its datasets, heads, metrics (with direction), a protocol ``Options`` dataclass (paper
App. A defaults) and an Optuna search space; ``run(ctx)`` returns typed results. The runner owns encoder
building, caching, tracking and reuse, so a suite is only the protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from harness.cache import FeatureCache
from harness.samples import PerSample


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: Literal["max", "min"]
    description: str = ""


@dataclass(frozen=True)
class SuiteSpec:
    name: str                       # registry name, e.g. "cls.imagenet"
    version: str                    # bump when the protocol changes numbers
    task: str                       # classification, depth, segmentation, retrieval, ...
    heads: tuple[str, ...]          # supported heads; the first is the default
    metrics: tuple[MetricSpec, ...]
    primary: str                    # the metric tables show
    paper_table: str = ""
    description: str = ""
    default_head: str | None = None  # when several heads share one pass, e.g. "linear,knn"
    validation: str | None = None   # metric measured on held-out training data: what sweeps optimise,
                                    # never the reported split (same direction as ``primary``)

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"suite {self.name} has no metric '{name}'")


@dataclass
class RunContext:
    """Everything a suite needs from the harness for one run."""
    encoder: Any                    # encoders.base.Encoder
    data: Path
    heads: tuple[str, ...]
    mode: Literal["fast", "exact"]
    device: torch.device
    precision: str
    batch_size: int
    num_workers: int
    seed: int
    cache: FeatureCache
    workspace: Any = None           # harness.workspace.Workspace: models/, data/, cache/ of this run
    progress: bool = True
    logger: Any = None              # harness.tracking.RunLogger or None (validate)
    on_intermediate: Any = None     # sweeps: callback(value, step) that may stop the run (pruning)

    def features(self, dataset, layers, kinds=("cls",), desc="features", norm=True):
        """Cached features of ``layers``; ``norm=False`` = raw blocks without the final norm (depth)."""
        return self.cache.get_or_compute(self.encoder, dataset, layers, kinds, device=self.device,
                                         precision=self.precision, batch_size=self.batch_size,
                                         num_workers=self.num_workers, progress=self.progress, desc=desc,
                                         norm=norm)

    def report_intermediate(self, value: float, step: int) -> None:
        """An intermediate value of the suite's validation metric (e.g. after each epoch). A sweep may
        prune the trial here (the callback raises)."""
        if self.logger is not None:
            self.logger.log_metrics({"intermediate.validation": value}, step=step)
        if self.on_intermediate is not None:
            self.on_intermediate(value, step)

    def log_curve(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)


@dataclass
class SuiteResult:
    """What one run produced.

    ``metrics`` holds flat names (the spec's metrics among them, per head: ``lin.rmse``). Reference rows
    travel in the same dict under ``floor.<metric>``: what a trivial predictor scores on the same split
    with the same metric (training-mean depth, majority class, random ranking, mean action), e.g.
    ``floor.rmse`` beside ``lin.rmse`` / ``dpt.rmse``; more floors as ``floor_<kind>.<metric>``; what each
    floor is goes into ``details["floors"] = {"floor": "...", "floor_<kind>": "..."}`` (reports label rows with it).
    ``per_sample`` maps metric names (encoder metrics and floors) to the per-sample statistics they
    reduce from (:mod:`harness.samples`); the runner checks and logs them, reports bootstrap them.
    """
    metrics: dict[str, float]
    selection: dict[str, Any] = field(default_factory=dict)  # which head/hparams were chosen, on what
    details: dict[str, Any] = field(default_factory=dict)    # logged as an artifact
    per_sample: dict[str, PerSample] = field(default_factory=dict)
    # What a user looks at in the MLflow UI: name -> matplotlib Figure (per-class IoU bars, depth error
    # maps, retrieval top-k strips, rollout frames), logged by the runner as ``figures/<name>.png``.
    figures: dict[str, Any] = field(default_factory=dict)


class Suite:
    spec: ClassVar[SuiteSpec]
    Options: ClassVar[type]         # protocol dataclass
    # False where the evaluated data never comes from the embedded world (real benchmarks read through an
    # outside loader, e.g. lmms-eval's): the demo lists such suites as skipped instead of running them
    embedded_default: ClassVar[bool] = True

    def __init__(self, options):
        self.options = options

    def dataset_fingerprint(self, data: Path) -> str:
        """Cheap identity of the data this run reads (paths, sizes, labels): part of the config hash."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> SuiteResult:
        raise NotImplementedError

    def validate(self, ctx: RunContext) -> dict[str, Any]:
        """Resolve datasets and push one batch through encoder and heads without training."""
        raise NotImplementedError

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        """Optuna space: {option: ("grid", values) | ("float", lo, hi, log) | ("int", lo, hi)}."""
        return {}

    @classmethod
    def demo_protocol(cls, preset: str) -> dict[str, Any]:
        """Protocol overrides that make the demo's preset ("tiny" or "default") fit a 2-core CPU."""
        return {}

    @classmethod
    def demo_heads(cls, preset: str) -> str | None:
        """Heads the demo's preset runs (comma list); None = the spec's default head set. A suite whose
        head cannot converge inside the CPU budget leaves it out here rather than report an unconverged number."""
        return None

    @classmethod
    def demo_seeds(cls, preset: str) -> tuple[int, ...]:
        """Run seeds the demo's preset evaluates each encoder with. A suite whose head outcome varies with
        its initialisation more than the encoders differ runs several; the report pools the seeds' paired
        per-sample records into one CI."""
        return (0,)

    def default_data(self, workspace) -> Path:
        """The embedded default (synthetic world in this suite's native format); may use the protocol."""
        from harness.errors import NoDefaultData
        raise NoDefaultData(f"suite {self.spec.name} has no embedded default data; pass --data")
