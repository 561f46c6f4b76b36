"""One evaluation: resolve config -> build encoder -> reuse or run the suite -> log to MLflow."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from harness.cache import FeatureCache
from harness.config import ConfigError, build, config_hash, field, to_dict
from harness.device import PRECISIONS, fast_precision, resolve_device
from harness.registry import SUITES, build_encoder
from harness.suite import RunContext, Suite
from harness.tracking import RunRecord, Tracker
from harness.workspace import Workspace, default_world, open_workspace


@dataclass(frozen=True)
class EvalConfig:
    encoder: str = field(help="encoder spec, e.g. builtin:dinov2-s14-focus or timm:NAME?ckpt=PATH")
    suite: str = field(help="suite name, see `spatialboost ls suites`")
    data: Path | None = field(None, must_exist=True, help="dataset root in the suite's native layout; "
                                                          "default: the synthetic world")
    head: str | None = field(None, help="head(s), comma separated; default: the suite's default")
    mode: Literal["fast", "exact"] = field("fast", help="fast = cached features; exact = on-the-fly "
                                                        "augmentation as the paper")
    seed: int = field(0, help="seed of every random choice")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = field(
        "fp32", help="autocast precision of the encoder; auto = bf16 where the device computes it natively "
                     "(CUDA with bf16, a CPU with AVX512-BF16/AMX), else fp32 (resolved before hashing)")
    protocol: dict[str, Any] = field(default_factory=dict, help="suite protocol options (see `spatialboost "
                                                               "ls suites --verbose`)")
    # The device is not part of a run's identity: the protocol's numbers do not depend on it by design
    # (only float rounding does), so a finished CPU run is reused on a GPU; the `device` tag records where a
    # run was computed and `eval` says so when it reuses one. Precision is hashed: bf16 changes numbers.
    device: str = field("auto", hash=False, help="auto, cpu, cuda, cuda:1, mps")
    batch_size: int = field(64, hash=False, help="encoder batch size (halves on out-of-memory)")
    num_workers: int = field(0, hash=False, help="data-loader workers")
    experiment: str = field("spatialboost", hash=False, help="MLflow experiment name")
    tracking_uri: str | None = field(None, hash=False, help="MLflow URI; default $MLFLOW_TRACKING_URI or "
                                                           "the workspace sqlite store")
    workspace: Path | None = field(None, hash=False, help="runtime data folder (default $SPATIALBOOST_HOME "
                                                         "or ./workspace)")
    # which embedded world supplies the data when `data` is not given; the dataset fingerprint (hashed)
    # already tells worlds apart, so the preset name itself is not part of a run's identity
    world: str = field(default_factory=default_world, hash=False, nonempty=True,
                       help="preset of the embedded synthetic world used without --data (default "
                            "$SPATIALBOOST_WORLD_PRESET or 'default')")
    force: bool = field(False, hash=False, help="recompute even if a finished run with this config exists")
    progress: bool = field(True, hash=False, help="show progress bars")


@dataclass
class Resolved:
    cfg: EvalConfig
    workspace: Workspace
    suite: Suite
    options: Any
    heads: tuple[str, ...]
    data: Path | None


def resolve(cfg: EvalConfig, *, data: bool = True) -> Resolved:
    """Everything that can be checked without touching weights: fail before any work. ``data=False``
    leaves the dataset unresolved (the default one may have to be generated: build the encoder first)."""
    if cfg.precision not in PRECISIONS + ("auto",):
        raise ConfigError(f"precision: '{cfg.precision}' is not one of {PRECISIONS + ('auto',)}")
    device = resolve_device(cfg.device)      # a device this machine lacks fails here, before any run exists
    if cfg.precision == "auto":     # the run's identity and tags carry what was actually used
        cfg = replace(cfg, precision=fast_precision(device))
    suite_cls = SUITES.get(cfg.suite)
    options = build(suite_cls.Options, cfg.protocol, prefix="protocol.")
    spec = suite_cls.spec
    heads = tuple(h.strip() for h in (cfg.head or spec.default_head or spec.heads[0]).split(",") if h.strip())
    bad = [h for h in heads if h not in spec.heads]
    if bad:
        raise ConfigError(f"head '{bad[0]}' is not available for suite {spec.name}; "
                          f"choose from {', '.join(spec.heads)}")
    suite = suite_cls(options)
    ws = open_workspace(cfg.workspace, cfg.world)   # only now: a refused config leaves no workspace folder behind
    r = Resolved(cfg, ws, suite, options, heads, None)
    return resolve_data(r) if data else r


def resolve_data(r: Resolved) -> Resolved:
    """The dataset root: ``--data`` or the suite's default (may generate the synthetic world)."""
    if r.data is None:
        d = r.cfg.data if r.cfg.data is not None else r.suite.default_data(r.workspace)  # may depend on the protocol
        r.data = Path(d)
    return r


def tracking_uri(cfg: EvalConfig, ws: Workspace) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ws.tracking_uri


def _context(r: Resolved, encoder, logger=None) -> RunContext:
    cfg = r.cfg
    return RunContext(encoder=encoder, data=r.data, heads=r.heads, mode=cfg.mode,
                      device=resolve_device(cfg.device), precision=cfg.precision, batch_size=cfg.batch_size,
                      num_workers=cfg.num_workers, seed=cfg.seed, cache=FeatureCache(r.workspace.cache),
                      workspace=r.workspace, progress=cfg.progress, logger=logger)


def run_hash(r: Resolved, encoder, dataset_fp: str) -> str:
    spec = r.suite.spec
    return config_hash(replace(r.cfg, head=",".join(r.heads), protocol={}), r.options,
                       encoder.fingerprint(), dataset_fp, spec.name, spec.version)


def evaluate(cfg: EvalConfig, *, encoder=None, parent_run_id: str | None = None,
             cache: FeatureCache | None = None, on_intermediate=None) -> RunRecord:
    """Run (or reuse) one evaluation and return its MLflow record."""
    r = resolve(cfg, data=False)
    cfg = r.cfg                     # precision=auto resolved
    encoder = encoder if encoder is not None else build_encoder(cfg.encoder, r.workspace)   # a bad spec fails before any data
    resolve_data(r)
    tracker = Tracker(tracking_uri(cfg, r.workspace), cfg.experiment, r.workspace.artifacts)
    dataset_fp = r.suite.dataset_fingerprint(r.data)
    chash = run_hash(r, encoder, dataset_fp)
    with config_lease(r.workspace, chash, tracker.uri):
        if not cfg.force:
            found = tracker.find_finished(chash) or wait_for_running(tracker, chash)
            if found is not None:
                return found
        return _run(cfg, r, tracker, encoder, dataset_fp, chash, parent_run_id, cache, on_intermediate)


@contextlib.contextmanager
def config_lease(ws: Workspace, chash: str, uri: str):
    """One process at a time per config hash: a second identical command waits here, then reuses the
    finished run (or, if the first failed, runs it itself). An flock, so a killed holder releases it.
    The lock lives beside the sqlite store (or in the workspace for a server store: then it covers the
    processes of this machine only)."""
    from filelock import FileLock, Timeout
    base = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else ws.root
    folder = base / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"{chash}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting: an identical run (config hash {chash}) is in progress in another process",
              file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


RUNNING_POLL_SECONDS = 15.0


def wait_for_running(tracker: Tracker, chash: str, poll: float | None = None) -> RunRecord | None:
    """Another machine sharing the tracking server runs this exact config (a live RUNNING run: its
    heartbeat is fresh): wait for it and reuse its result, so overlapping campaigns never compute a job
    twice. Returns None when there is none, or when it failed or died (then this process runs it)."""
    run_id = tracker.find_running(chash)
    if run_id is None:
        return None
    print(f"waiting: run {run_id} with the same config (hash {chash}) is in progress elsewhere",
          file=sys.stderr, flush=True)
    while tracker.find_running(chash) == run_id:
        time.sleep(RUNNING_POLL_SECONDS if poll is None else poll)
    return tracker.find_finished(chash)


def _run(cfg, r, tracker, encoder, dataset_fp, chash, parent_run_id, cache, on_intermediate) -> RunRecord:
    spec = r.suite.spec
    tags = {"encoder": cfg.encoder, "encoder_fingerprint": encoder.fingerprint(), "suite": spec.name,
            "suite_version": spec.version, "task": spec.task, "head": ",".join(r.heads),
            "dataset": str(r.data), "dataset_fingerprint": dataset_fp, "mode": cfg.mode,
            "config_hash": chash, "seed": cfg.seed, "precision": cfg.precision,
            "device": str(resolve_device(cfg.device)),   # not in the hash: see EvalConfig.device
            "primary_metric": spec.primary, "boosted_from": getattr(encoder, "boosted_from", "") or "",
            "random_of": getattr(encoder, "random_of", "") or "",
            **(getattr(encoder, "run_tags", None) or {})}  # e.g. a boosted encoder's boost.* tags
    params = {"encoder": cfg.encoder, "suite": spec.name, "head": ",".join(r.heads), "mode": cfg.mode,
              "seed": cfg.seed, "precision": cfg.precision}
    for k, v in to_dict(r.options).items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            params[f"protocol.{k}"] = v
    resolved_cfg = {**to_dict(cfg), "protocol": to_dict(r.options), "heads": list(r.heads),
                    "data": str(r.data), "config_hash": chash}
    name = f"{spec.name}/{','.join(r.heads)}/{cfg.encoder.split('?')[0]}"
    with tracker.start(name, tags, params, resolved_cfg, parent_run_id=parent_run_id) as logger:
        logger.log_input(f"{spec.name}:{r.data.name}", dataset_fp, str(r.data))
        ctx = _context(r, encoder, logger)
        ctx.on_intermediate = on_intermediate
        if cache is not None:
            ctx.cache = cache
        start = time.perf_counter()
        result = r.suite.run(ctx)
        elapsed = time.perf_counter() - start
        missing = [m.name for m in spec.metrics if m.name not in result.metrics]
        logger.log_metrics({**result.metrics, "seconds": elapsed})
        logger.log_dict({"metrics": result.metrics, "selection": result.selection, "details": result.details,
                         "metric_directions": metric_directions(spec, result.metrics),
                         "missing_metrics": missing}, "result.json")
        log_per_sample(logger, result)
        for fig_name, fig in result.figures.items():
            logger.log_figure(fig, fig_name)
        directions = json.dumps(metric_directions(spec, result.metrics), separators=(",", ":"))
        logger.set_tags({"cache_forwards": ctx.cache.stats.forwards,   # reports read directions from the tag
                         **({"metric_directions": directions} if len(directions) <= 5000 else {})})
        run_id = logger.run_id
        metrics = dict(logger.metrics)
    return RunRecord(run_id, metrics, tags, reused=False)


def log_per_sample(logger, result) -> None:
    """Check that each per-sample record reduces to its reported metric, then log it as
    ``per_sample/<metric>.npz`` (the paired bootstrap of the reports reads these)."""
    import tempfile
    from harness.samples import check_consistent
    if not result.per_sample:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, samples in result.per_sample.items():
            if name not in result.metrics:
                raise ValueError(f"per-sample record '{name}' has no reported metric of that name")
            check_consistent(name, float(result.metrics[name]), samples)
            samples.save(Path(tmp) / f"{name}.npz")
        logger.log_artifact(tmp, "per_sample")


def metric_directions(spec, metrics) -> dict[str, str]:
    """Declared metrics plus their per-head variants (``dpt.rmse`` has the direction of ``rmse``)."""
    out = {m.name: m.direction for m in spec.metrics}
    for key in metrics:
        for m in spec.metrics:
            if key.endswith("." + m.name) and key not in out:
                out[key] = m.direction
    return out  # floors (``floor.rmse``) get the direction of their metric by the same suffix rule


def validate(cfg: EvalConfig) -> dict:
    """Resolve everything and push one batch through encoder and heads, without training or logging."""
    r = resolve(cfg, data=False)
    from harness.tracking import check_reachable
    check_reachable(tracking_uri(cfg, r.workspace))
    encoder = build_encoder(cfg.encoder, r.workspace)
    resolve_data(r)
    ctx = _context(r, encoder)
    ctx.encoder = encoder.to(ctx.device)
    report = {"encoder": encoder.describe(), "suite": r.suite.spec.name, "heads": list(r.heads),
              "data": str(r.data), "dataset_fingerprint": r.suite.dataset_fingerprint(r.data),
              "config_hash": run_hash(r, encoder, r.suite.dataset_fingerprint(r.data))}
    import torch
    with torch.no_grad():
        report["check"] = r.suite.validate(ctx)
    return report
