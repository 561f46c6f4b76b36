"""MLflow runs -> a tidy pandas DataFrame: one row per (run, metric) of the suites' declared metrics."""
from __future__ import annotations

import json

import pandas as pd

COLUMNS = ["experiment", "run_id", "encoder", "boosted_from", "suite", "task", "dataset", "head", "mode",
           "metric", "value", "direction", "primary", "seed", "config_hash", "status", "start_time"]


class ResultsError(LookupError):
    pass


def load_runs(tracking_uri: str, experiment: str, *, finished_only: bool = True) -> pd.DataFrame:
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ResultsError(f"experiment '{experiment}' does not exist; experiments: {', '.join(names) or '(none)'}")
    flt = "attributes.status = 'FINISHED'" if finished_only else ""
    rows = []
    for run in client.search_runs([exp.experiment_id], filter_string=flt, max_results=50000):
        tags = run.data.tags
        if "suite" not in tags or "mlflow.parentRunId" in tags and tags.get("sweep_trial") == "1":
            continue
        directions = _directions(client, run)
        for metric, direction in directions.items():
            if metric not in run.data.metrics:
                continue
            rows.append({"experiment": experiment, "run_id": run.info.run_id, "encoder": tags.get("encoder"),
                         "boosted_from": tags.get("boosted_from", ""), "suite": tags["suite"],
                         "task": tags.get("task", ""), "dataset": tags.get("dataset", ""),
                         "head": tags.get("head", ""), "mode": tags.get("mode", ""), "metric": metric,
                         "value": run.data.metrics[metric], "direction": direction,
                         "primary": metric == tags.get("primary_metric"), "seed": int(tags.get("seed", 0)),
                         "config_hash": tags.get("config_hash", ""), "status": run.info.status,
                         "start_time": run.info.start_time})
    return pd.DataFrame(rows, columns=COLUMNS)


def _directions(client, run) -> dict[str, str]:
    """The metric directions the suite declared, read from the run's result artifact."""
    try:
        text = client.download_artifacts(run.info.run_id, "result.json")
        with open(text) as f:
            return json.load(f).get("metric_directions", {})
    except Exception:  # noqa: BLE001 - a run without the artifact has no declared metrics
        return {}


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """mean and std over seeds for each (encoder, suite, dataset, head, mode, metric)."""
    keys = ["encoder", "boosted_from", "suite", "dataset", "head", "mode", "metric", "direction", "primary"]
    g = df.groupby(keys, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["run_ids"] = g["run_id"].agg(lambda s: ",".join(sorted(s))).values
    return out
