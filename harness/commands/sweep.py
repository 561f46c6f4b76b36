"""Resumable Optuna sweeps over a suite's protocol options, every trial a nested MLflow run.

Storage is sqlite in the workspace by default, or any database URL (PostgreSQL) shared by many workers
on many machines. Resuming and parallel safety rest on three rules:
- heartbeats: a trial whose worker died (kill -9) goes stale, is marked failed and re-enqueued with the
  same parameters, so no point is lost;
- grids are enqueued point by point (not left to GridSampler, which can hand one point to two parallel
  workers) and a trial whose parameters are already complete, or running in an older trial, prunes itself
  as a duplicate, so no point runs twice;
- each trial's evaluation reuses a finished MLflow run with the same config hash, so work that finished
  just before a kill is not recomputed.
The objective is the suite's validation metric (held-out training data), never the reported one.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from harness.config import ConfigError, build, config_hash, field, merge, to_dict
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate, resolve, resolve_data, tracking_uri
from harness.tracking import Tracker, process_tags

DUPLICATE = "duplicate_of"


@dataclass(frozen=True)
class SweepSpec:
    space: dict[str, Any] = field(default_factory=dict, help="option -> [values] (grid) or {low, high, log, "
                                                            "type: float|int}; default: the suite's space")
    sampler: str = field("auto", help="grid, tpe, random, or auto (grid when every dimension is a list)")
    n_trials: int | None = field(None, help="trials to complete (grids: every point)")
    storage: str | None = field(None, help="Optuna storage URL; default sqlite in the workspace")
    study: str | None = field(None, help="study name; default derived from (suite, head, encoder, config)")
    heartbeat_seconds: int = field(10, help="trial heartbeat; a trial silent for grace_seconds is retried")
    grace_seconds: int = field(30, help="see heartbeat_seconds")
    seed: int = field(0, help="sampler seed")
    pruner: str = field("median", help="median (prune below the median of earlier trials at the same step), "
                                       "none, or threshold:VALUE; used where a suite reports intermediate "
                                       "validation values (grids are never pruned)")


@dataclass(frozen=True)
class Dimension:
    key: str                 # dotted EvalConfig key, e.g. protocol.lr
    values: tuple | None     # categorical / grid
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial):
        if self.values is not None:
            return trial.suggest_categorical(self.key, list(self.values))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


def parse_space(space: dict[str, Any]) -> list[Dimension]:
    dims = []
    for key, spec in space.items():
        key = key if "." in key or key in ("seed", "head", "mode") else f"protocol.{key}"
        if isinstance(spec, tuple) and spec and spec[0] in ("grid", "float", "int"):   # a suite's own form
            if spec[0] == "grid":
                dims.append(Dimension(key, tuple(spec[1])))
            else:
                low, high = float(spec[1]), float(spec[2])
                if not low < high:
                    raise ConfigError(f"search space '{key}' has an empty range [{low}, {high}]")
                dims.append(Dimension(key, None, low, high, len(spec) > 3 and bool(spec[3]), spec[0] == "int"))
        elif isinstance(spec, (list, tuple)):
            if not spec:
                raise ConfigError(f"search space '{key}' has no values")
            dims.append(Dimension(key, tuple(spec)))
        elif isinstance(spec, dict):
            kind = spec.get("type", "float")
            if kind == "grid" or "values" in spec:
                return parse_space({**space, key: list(spec.get("values", []))})
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"search space '{key}': give low and high numbers, got {spec}") from None
            if not low < high:
                raise ConfigError(f"search space '{key}' has an empty range [{low}, {high}]")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"search space '{key}': a log range needs low > 0, got {low}")
            dims.append(Dimension(key, None, low, high, bool(spec.get("log")), kind == "int"))
        else:
            raise ConfigError(f"search space '{key}': expected a list of values or {{low, high}}, got {spec!r}")
    return dims


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


@dataclass
class SweepResult:
    study: str
    parent_run_id: str
    best_params: dict[str, Any]
    best_value: float
    best_run_id: str
    completed: int
    duplicates: int


def open_storage(url: str, spec: SweepSpec, attempts: int = 5):
    """RDB storage with heartbeats. Workers that start together on a fresh database race to create
    Optuna's tables; the loser sees an IntegrityError (duplicate type) or a ProgrammingError (relation
    already exists) from PostgreSQL and simply tries again."""
    import random

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for attempt in range(attempts):
        try:
            return RDBStorage(url, heartbeat_interval=spec.heartbeat_seconds, grace_period=spec.grace_seconds,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                              engine_kwargs={"pool_pre_ping": True})
        except Exception as e:  # noqa: BLE001 - sqlalchemy raises many types for a bad URL
            if type(e).__name__ in ("IntegrityError", "ProgrammingError") and attempt < attempts - 1:
                time.sleep(0.5 + random.random())
                continue
            raise ConfigError(f"Optuna storage '{url}' is unreachable or invalid: {type(e).__name__}: "
                              f"{str(e).splitlines()[0]}") from None


def run_sweep(base: EvalConfig, spec: SweepSpec, *, max_trials_this_worker: int | None = None,
              log=print) -> SweepResult:
    """Run (or resume, or join as a further worker) the study and return its best trial."""
    import warnings

    import optuna
    # ERROR: Optuna would log every failed trial with its traceback; the error itself propagates (catch=())
    # and is reported once (a user error as `error: ...`), and each trial's state is logged below
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from harness.registry import build_encoder
    r = resolve(base, data=False)
    encoder = build_encoder(base.encoder, r.workspace)     # a bad spec fails here, not in every trial; trials share it
    resolve_data(r)
    suite_cls = SUITES.get(base.suite)
    sspec = suite_cls.spec
    metric = sspec.validation
    if metric is None:
        raise ConfigError(f"suite {sspec.name} declares no validation metric, so a sweep could only select on "
                          "the reported split; add SuiteSpec.validation first")
    direction = sspec.metric(sspec.primary).direction
    dims = parse_space(spec.space or suite_cls.search_space())
    if not dims:
        raise ConfigError(f"suite {sspec.name} has no search space; give sweep.space")
    for d in dims:   # every dimension must be a valid override of the base config
        build(EvalConfig, merge(to_dict(base), _nest({d.key: d.values[0] if d.values else d.low})))
    grid = all(d.values is not None for d in dims)
    sampler_name = spec.sampler if spec.sampler != "auto" else ("grid" if grid else "tpe")
    if sampler_name == "grid" and not grid:
        raise ConfigError("sampler 'grid' needs a list of values for every dimension")
    points = [dict(zip([d.key for d in dims], combo)) for combo in itertools.product(*[d.values for d in dims])] \
        if sampler_name == "grid" else []
    target = len(points) if sampler_name == "grid" else (spec.n_trials or 20)

    study_name = spec.study or f"{sspec.name}|{','.join(r.heads)}|{base.encoder}|" \
                               f"{config_hash(replace(base, protocol={}), r.options)}"
    url = spec.storage or r.workspace.optuna_uri
    storage = open_storage(url, spec)
    sampler = {"grid": optuna.samplers.RandomSampler(seed=spec.seed),   # points come from enqueue_trial
               "tpe": optuna.samplers.TPESampler(seed=spec.seed),
               "random": optuna.samplers.RandomSampler(seed=spec.seed)}.get(sampler_name)
    if sampler is None:
        raise ConfigError(f"sampler '{spec.sampler}' is not one of grid, tpe, random, auto")
    pruner = _pruner(spec.pruner, direction) if sampler_name != "grid" else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize" if direction == "max" else "minimize", load_if_exists=True)

    tracker = Tracker(tracking_uri(base, r.workspace), base.experiment, r.workspace.artifacts)
    parent_id = _parent_run(tracker, study_name, sspec.name, base, metric, sampler_name, url)

    def objective(trial):
        params = {d.key: d.suggest(trial) for d in dims}
        for other in study.get_trials(deepcopy=False):
            if other.number == trial.number or other.params != params:
                continue
            if other.state == optuna.trial.TrialState.COMPLETE or (
                    other.state == optuna.trial.TrialState.RUNNING and other.number < trial.number):
                trial.set_user_attr(DUPLICATE, other.number)
                raise optuna.TrialPruned(f"parameters already taken by trial {other.number}")
        cfg = build(EvalConfig, merge(to_dict(base), _nest(params)))

        def on_intermediate(value: float, step: int) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} ({metric} so far {value:.4g})")

        rec = evaluate(cfg, encoder=encoder, parent_run_id=parent_id, on_intermediate=on_intermediate)
        trial.set_user_attr("run_id", rec.run_id)
        trial.set_user_attr("reused", rec.reused)
        for k in (sspec.primary,):
            if k in rec.metrics:
                trial.set_user_attr(k, rec.metrics[k])
        if metric not in rec.metrics:
            raise ConfigError(f"suite {sspec.name} did not report its validation metric '{metric}'")
        return rec.metrics[metric]

    try:
        return _drive(study, objective, spec, dims, points, target, sampler_name, metric, sspec, tracker,
                      parent_id, study_name, max_trials_this_worker, log)
    except BaseException as e:
        from harness.tracking import error_message
        try:
            run = tracker.client.get_run(parent_id)
            if run.info.status == "RUNNING":
                tracker.client.set_tag(parent_id, "error", error_message(e))
                tracker.client.set_terminated(parent_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception:   # noqa: BLE001 - keep the original error; the next command reaps the run
            pass
        raise


def _drive(study, objective, spec, dims, points, target, sampler_name, metric, sspec, tracker, parent_id,
           study_name, max_trials_this_worker, log) -> SweepResult:
    import optuna
    ran = 0
    while max_trials_this_worker is None or ran < max_trials_this_worker:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
        if sampler_name == "grid":
            done = [t.params for t in complete]
            busy = [t.params for t in running] + [_fixed(t) for t in waiting]
            todo = [p for p in points if p not in done]
            if not todo:
                break
            free = [p for p in todo if p not in busy]
            if free:
                study.enqueue_trial(free[0], skip_if_exists=False)
            elif not waiting:
                time.sleep(spec.heartbeat_seconds)   # the rest is running elsewhere (or about to go stale)
                continue
        else:   # a pruned trial counts as a trial (it ran until the pruner stopped it)
            pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and DUPLICATE not in t.user_attrs]
            if len(complete) + len(pruned) >= target:
                break
            if len(complete) + len(pruned) + len(running) >= target and not waiting:
                time.sleep(spec.heartbeat_seconds)
                continue
        ran_now: list = []      # the trial this call ran (a retried stale trial may be appended after it)
        study.optimize(objective, n_trials=1, catch=(), callbacks=[lambda st, t: ran_now.append(t)])
        ran += 1
        last = ran_now[-1] if ran_now else study.get_trials(deepcopy=False)[-1]
        log(f"[sweep] trial {last.number} {last.state.name} {last.params} "
            f"{metric}={last.value if last.value is not None else '-'}")

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    dups = sum(1 for t in study.get_trials(deepcopy=False) if DUPLICATE in t.user_attrs)
    if not complete:
        raise RuntimeError(f"study '{study_name}' has no completed trial (pruned or failed: see the trials' "
                           "MLflow runs)")
    best = study.best_trial
    _finish_parent(tracker, parent_id, best, metric, sspec.primary, len(complete), target, dups)
    return SweepResult(study_name, parent_id, dict(best.params), float(best.value),
                       best.user_attrs.get("run_id", ""), len(complete), dups)


def _pruner(spec: str, direction: str):
    import optuna
    if spec == "none":
        return optuna.pruners.NopPruner()
    if spec == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.startswith("threshold:"):
        try:
            value = float(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"sweep.pruner '{spec}': threshold needs a number, e.g. threshold:50") from None
        return optuna.pruners.ThresholdPruner(**({"lower": value} if direction == "max" else {"upper": value}))
    raise ConfigError(f"sweep.pruner '{spec}' is not one of median, none, threshold:VALUE")


def _fixed(trial) -> dict:
    return dict(trial.system_attrs.get("fixed_params", {}))


def _parent_run(tracker: Tracker, study: str, suite: str, base: EvalConfig, metric: str, sampler: str,
                storage: str) -> str:
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.study_name = '{study}' and tags.sweep_parent = '1'",
                                      max_results=1)
    if runs:   # resumed (or joined): this process owns it now, so the next command's reaper checks us
        run_id = runs[0].info.run_id
        if runs[0].info.status != "FINISHED":
            for k, v in process_tags().items():
                tracker.client.set_tag(run_id, k, v)
            tracker.client.update_run(run_id, status="RUNNING")
        return run_id
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"sweep:{suite}:{base.encoder.split('?')[0]}",
                                    tags={"study_name": study, "sweep_parent": "1", "suite": suite,
                                          "encoder": base.encoder, "selection_rule": f"best {metric} (validation)",
                                          "sampler": sampler, "optuna_storage": storage.split("@")[-1],
                                          **process_tags()})
    return run.info.run_id


def _finish_parent(tracker: Tracker, parent_id: str, best, metric: str, primary: str, completed: int,
                   target: int, duplicates: int) -> None:
    c = tracker.client
    c.log_metric(parent_id, f"best.{metric}", float(best.value))
    if primary in best.user_attrs:
        c.log_metric(parent_id, f"best.{primary}", float(best.user_attrs[primary]))
    c.log_metric(parent_id, "trials_completed", completed)
    c.set_tag(parent_id, "best_trial", best.number)
    c.set_tag(parent_id, "best_run_id", best.user_attrs.get("run_id", ""))
    c.set_tag(parent_id, "best_params", str(best.params))
    c.set_tag(parent_id, "duplicates_pruned", duplicates)
    if completed >= target:
        c.set_terminated(parent_id, "FINISHED")
