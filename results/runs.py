"""MLflow runs -> a tidy pandas DataFrame: one row per (run, declared metric).

Sweep trials are nested runs; only the best trial of each study (chosen on the validation metric by the
sweep, recorded on its parent run) stands for the study, so a table never selects on the reported split.
"""
from __future__ import annotations

import json
import os

import pandas as pd

from harness.errors import UserError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

COLUMNS = ["experiment", "run_id", "encoder", "boosted_from", "suite", "task", "dataset", "head", "mode",
           "metric", "value", "direction", "primary", "seed", "config_hash", "start_time", "boost_samples",
           "boost_variant"]
CELL_KEYS = ["encoder", "suite", "dataset", "head", "mode", "metric", "seed"]


class ResultsError(UserError, LookupError):
    pass


def experiments(tracking_uri: str) -> list[str]:
    import mlflow
    return sorted(e.name for e in mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments())


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ResultsError(f"experiment '{experiment}' does not exist; experiments: "
                           f"{', '.join(experiments(tracking_uri)) or '(none)'}")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=50000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("sweep_parent") == "1"}
    rows = []
    for run in runs:
        tags = run.data.tags
        if "suite" not in tags or tags.get("sweep_parent") == "1":
            continue
        parent = parents.get(tags.get("mlflow.parentRunId", ""))
        if parent is not None and parent.data.tags.get("best_run_id") != run.info.run_id:
            continue  # a sweep trial that is not its study's best
        for metric, direction in _directions(client, run).items():
            if metric not in run.data.metrics:
                continue
            rows.append({"experiment": experiment, "run_id": run.info.run_id, "encoder": tags.get("encoder"),
                         "boosted_from": tags.get("boosted_from", ""), "suite": tags["suite"],
                         "task": tags.get("task", ""), "dataset": tags.get("dataset", ""),
                         "head": tags.get("head", ""), "mode": tags.get("mode", ""), "metric": metric,
                         "value": run.data.metrics[metric], "direction": direction,
                         "primary": metric == tags.get("primary_metric"), "seed": int(tags.get("seed", 0)),
                         "config_hash": tags.get("config_hash", ""), "start_time": run.info.start_time,
                         "boost_samples": float(tags.get("boost.samples", "nan") or "nan"),
                         "boost_variant": tags.get("boost.variant", "")})
    return pd.DataFrame(rows, columns=COLUMNS)


def _directions(client, run) -> dict[str, str]:
    """The metric directions the suite declared, read from the run's result artifact."""
    try:
        path = client.download_artifacts(run.info.run_id, "result.json")
        with open(path) as f:
            return json.load(f).get("metric_directions", {})
    except Exception:  # noqa: BLE001 - a run without the artifact declares no metrics
        return {}


def check_conflicts(df: pd.DataFrame) -> None:
    """One cell (encoder, suite, dataset, head, mode, metric, seed) must come from one config."""
    if df.empty:
        return
    g = df.groupby(CELL_KEYS, dropna=False)["config_hash"].nunique()
    bad = g[g > 1]
    if len(bad):
        key = bad.index[0]
        sub = df.set_index(CELL_KEYS).loc[key]
        detail = ", ".join(f"run {r} (config {c})" for r, c in zip(sub["run_id"], sub["config_hash"]))
        raise ResultsError(f"runs with conflicting configs for one cell {dict(zip(CELL_KEYS, key))}: {detail}. "
                           "Put differing protocols in separate experiments, or delete the stale runs.")


def latest_per_config(df: pd.DataFrame) -> pd.DataFrame:
    """A --force rerun of the same config replaces the older run."""
    if df.empty:
        return df
    idx = df.sort_values("start_time").groupby(CELL_KEYS + ["config_hash"], dropna=False).tail(1).index
    return df.loc[sorted(idx)]


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """mean and std over seeds per (encoder, suite, dataset, head, mode, metric), with the run ids."""
    keys = ["encoder", "boosted_from", "suite", "dataset", "head", "mode", "metric", "direction", "primary"]
    if df.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "n", "run_ids"])
    g = df.groupby(keys, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["run_ids"] = g["run_id"].agg(lambda s: ",".join(sorted(s))).values
    return out
