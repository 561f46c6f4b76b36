"""MLflow runs -> a tidy pandas DataFrame: one row per (run, declared metric).

Sweep trials are nested runs; only the best trial of each study (chosen on the validation metric by the
sweep, recorded on its parent run) stands for the study, so a table never selects on the reported split.

A run whose declared metric directions cannot be read (no ``result.json``, unreachable artifact store)
stops the load with an error naming the run: silently dropping it would leave cells empty or, worse,
fill them from fewer seeds. ``allow_missing=True`` skips such runs instead and lists each with its reason.
Floors (``floor.<metric>``, ``floor_<kind>.<metric>``) are kept as rows of the run that logged them.
Report runs (tag ``kind=report``: a built report logged back to the experiment) are never rows.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import pandas as pd

from harness.errors import UserError

COLUMNS = ("experiment", "run_id", "encoder", "boosted_from", "suite", "suite_version", "task", "dataset", "head",
           "mode", "metric", "value", "direction", "primary", "seed", "config_hash", "start_time", "boost_samples",
           "boost_variant", "random_of", "boost_lm", "boost_lm_random", "boost_steps", "boost_run", "run_std",
           # what a boost ablation varied in its spatial QA data (encoders/spatialboost/records.py data_tags)
           "boost_levels", "boost_order", "boost_views", "boost_data_samples", "boost_source")
BOOST_DATA_TAGS = {"boost_levels": "boost.data.levels", "boost_order": "boost.data.order",
                   "boost_views": "boost.data.views", "boost_data_samples": "boost.data.samples",
                   "boost_source": "boost.data.source"}
CELL_KEYS = ("encoder", "suite", "dataset", "head", "mode", "metric", "seed")
REPORT_KIND = "report"      # tag kind of report runs (reports.publish)


def quiet_downloads() -> None:
    """No tqdm bar per artifact download (MLflow shows one even for a single small file); a default the
    caller's environment can override."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ResultsError(UserError, LookupError):
    pass


def experiments(tracking_uri: str) -> list[str]:
    import mlflow
    return sorted(e.name for e in mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments())


@dataclass
class Skipped:
    run_id: str
    what: str           # encoder / suite of the run
    reason: str

    def __str__(self) -> str:
        return f"run {self.run_id} ({self.what}): {self.reason}"


def load_runs(tracking_uri: str, experiment: str, allow_missing: bool = False,
              skipped: list[Skipped] | None = None) -> pd.DataFrame:
    """The experiment's finished runs; unreadable runs raise :class:`ResultsError` naming them, or with
    ``allow_missing`` are appended to ``skipped`` (with the reason) and left out."""
    import mlflow
    quiet_downloads()
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
        if tags.get("kind") == REPORT_KIND or "suite" not in tags or tags.get("sweep_parent") == "1":
            continue
        parent = parents.get(tags.get("mlflow.parentRunId", ""))
        if parent is not None and parent.data.tags.get("best_run_id") != run.info.run_id:
            continue  # a sweep trial that is not its study's best
        try:
            directions = _directions(client, run)
        except ResultsError as e:
            if not allow_missing:
                raise
            if skipped is not None:
                skipped.append(Skipped(run.info.run_id, f"{tags.get('encoder')} on {tags['suite']}", str(e)))
            continue
        for metric, direction in _with_floors(directions, run.data.metrics).items():
            if metric not in run.data.metrics:
                continue
            rows.append({"experiment": experiment, "run_id": run.info.run_id, "encoder": tags.get("encoder"),
                         "boosted_from": tags.get("boosted_from", ""), "suite": tags["suite"],
                         "suite_version": tags.get("suite_version", ""),
                         "task": tags.get("task", ""), "dataset": tags.get("dataset", ""),
                         "head": tags.get("head", ""), "mode": tags.get("mode", ""), "metric": metric,
                         "value": run.data.metrics[metric], "direction": direction,
                         "primary": metric == tags.get("primary_metric"), "seed": int(tags.get("seed", 0)),
                         "config_hash": tags.get("config_hash", ""), "start_time": run.info.start_time,
                         "boost_samples": boost_samples(tags.get("boost.samples", "")),
                         "boost_variant": tags.get("boost.variant", ""), "random_of": tags.get("random_of", ""),
                         "boost_lm": tags.get("boost.lm", ""), "boost_lm_random": tags.get("boost.lm_random", ""),
                         "boost_steps": tags.get("boost.steps", ""), "boost_run": tags.get("boost.run_id", ""),
                         "run_std": run.data.metrics.get(f"{metric}.std", float("nan")),
                         **{col: tags.get(tag, "") for col, tag in BOOST_DATA_TAGS.items()}})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _directions(client, run) -> dict[str, str]:
    """The metric directions the suite declared: the ``metric_directions`` tag (JSON) when the runner
    wrote one (no artifact download), else the run's ``result.json``. Any failure names the run."""
    rid = run.info.run_id
    what = f"run {rid} ({run.data.tags.get('encoder')} on {run.data.tags.get('suite')})"
    tag = run.data.tags.get("metric_directions")
    if tag:
        try:
            out = json.loads(tag)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{what}: tag metric_directions is not JSON ({e})") from None
    else:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(rid, "result.json", tmp)
                with open(path) as f:
                    out = json.load(f).get("metric_directions")
        except Exception as e:  # noqa: BLE001 - mlflow raises many types; re-raised with the run named
            raise ResultsError(f"{what}: cannot read its result.json ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict) or any(v not in ("max", "min") for v in out.values()):
        raise ResultsError(f"{what}: metric_directions must map metric names to 'max'/'min', got {out!r}")
    return out


def _with_floors(directions: dict[str, str], metrics) -> dict[str, str]:
    """Floors take the direction of the metric they stand beside (``floor.mAP.H`` -> ``mAP.H``)."""
    out = dict(directions)
    for key in metrics:
        if key in out or not key.startswith("floor"):
            continue
        rest = key.split(".", 1)[1] if "." in key else ""
        if key.split(".", 1)[0] == "floor" or key.startswith("floor_"):
            for name, d in directions.items():
                if rest == name or rest.endswith("." + name) or name.endswith("." + rest):
                    out[key] = d
                    break
    return out


def boost_samples(tag: str) -> float:
    """QA samples a boosted candidate was trained on: a plain number, or per stage ("1:4,2:4,3:16", as the
    trainer tags it) the last stage's (the spatial QA data Figure 5 scales); nan when absent or unreadable."""
    tag = (tag or "").strip()
    try:
        if ":" in tag:
            stages = dict(part.split(":", 1) for part in tag.split(",") if part.strip())
            return float(stages[max(stages, key=lambda k: int(k))])
        return float(tag) if tag else float("nan")
    except (ValueError, KeyError):
        return float("nan")


def check_conflicts(df: pd.DataFrame) -> None:
    """One cell (encoder, suite, dataset, head, mode, metric, seed) must come from one config."""
    if df.empty:
        return
    g = df.groupby(list(CELL_KEYS), dropna=False)["config_hash"].nunique()
    bad = g[g > 1]
    if len(bad):
        key = bad.index[0]
        sub = df.set_index(list(CELL_KEYS)).loc[key]
        detail = ", ".join(f"run {r} (config {c})" for r, c in zip(sub["run_id"], sub["config_hash"]))
        raise ResultsError(f"runs with conflicting configs for one cell {dict(zip(CELL_KEYS, key))}: {detail}. "
                           "Put differing protocols in separate experiments, or delete the stale runs.")


def _version_key(v: str) -> tuple:
    """"5" > "4", "2.1" > "2", "10" > "9"; an untagged run ("") is older than any tagged one."""
    try:
        return (1, tuple(int(x) for x in str(v).split(".")))
    except ValueError:
        return (0 if not v else 1, (str(v),))


def drop_superseded(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep each suite's runs of its newest version in the experiment. A suite's version changes when its
    numbers stop being comparable with the older ones (a protocol or selection change), so a workspace rerun
    after an upgrade holds both; the older runs are left out, each suite's count named in the returned notes,
    instead of the report refusing the cell as two conflicting configs."""
    if df.empty or "suite_version" not in df:
        return df, []
    keep, notes = pd.Series(True, index=df.index), []
    for suite, sub in df.groupby("suite"):
        versions = sorted(set(sub["suite_version"]), key=_version_key)
        if len(versions) < 2:
            continue
        old = sub["suite_version"] != versions[-1]
        keep[sub.index[old]] = False
        stale = sub[old]
        notes.append(f"{suite}: {stale['run_id'].nunique()} run(s) of version "
                     f"{', '.join(v or '(untagged)' for v in versions[:-1])} superseded by version {versions[-1]} "
                     f"and left out")
    return df[keep], notes


def latest_per_config(df: pd.DataFrame) -> pd.DataFrame:
    """A --force rerun of the same config replaces the older run."""
    if df.empty:
        return df
    idx = df.sort_values("start_time").groupby([*CELL_KEYS, "config_hash"], dropna=False).tail(1).index
    return df.loc[sorted(idx)]


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """mean and std over seeds per (encoder, suite, dataset, head, mode, metric), with the run ids (and
    ``run_std``, the first run's own logged ``<metric>.std``)."""
    keys = ["encoder", "boosted_from", "suite", "dataset", "head", "mode", "metric", "direction", "primary"]
    if df.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "n", "run_ids", "run_std"])
    g = df.groupby(keys, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    # a run's own std over the seeds it ran internally (``success.std``): the cell's std when one run
    out["run_std"] = (g["run_std"].first() if "run_std" in df else pd.Series(float("nan"), index=g.size().index)).values
    out["run_ids"] = g["run_id"].agg(lambda s: ",".join(sorted(s))).values
    return out
