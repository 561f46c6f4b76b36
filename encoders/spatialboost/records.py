"""What a boost run records: ``pipeline.json`` in its run folder (the config, the stages completed, the MLflow run
ids, so that a rerun resumes into the same runs) and its MLflow runs (a parent per boost, a child per stage).

Only the main process writes; with ``tracking=false`` (or on the other processes) the MLflow calls do nothing.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from harness.atomic import atomic_write_json
from harness.config import to_dict

log = logging.getLogger(__name__)


class BoostRecords:
    def __init__(self, run_dir: Path, cfg, config_hash: str, workspace, main: bool):
        self.cfg = cfg
        self.hash = config_hash
        self.main = main
        self.path = run_dir / "pipeline.json"
        self.pipeline = json.loads(self.path.read_text()) if self.path.is_file() else {
            "config_hash": config_hash, "config": to_dict(cfg), "completed": [], "runs": {}}
        self.tracked = cfg.tracking and main
        self.tracker = None
        if self.tracked:
            from harness.tracking import Tracker
            import os     # a team's server ($MLFLOW_TRACKING_URI) wins over the workspace store, as for eval
            self.tracker = Tracker(os.environ.get("MLFLOW_TRACKING_URI") or workspace.tracking_uri, cfg.experiment,
                                   workspace.artifacts)

    @property
    def runs(self) -> dict[str, str]:
        """Run key (``parent``, ``stage<k>``) -> MLflow run id."""
        return self.pipeline["runs"]

    def save(self) -> None:
        if self.main:
            atomic_write_json(self.path, self.pipeline, default=str)

    def start_run(self, key: str, name: str, tags: dict, params: dict, parent: str | None) -> str | None:
        """The MLflow run of ``key``: the one recorded in pipeline.json (set RUNNING again, owned by this process)
        or a new one with the provenance tags, params, config and package versions."""
        if not self.tracked:
            return None
        client = self.tracker.client
        rid = self.runs.get(key)
        if rid:
            client.update_run(rid, status="RUNNING")
            from harness.tracking import process_tags     # this process owns it now (see reap_dead_runs)
            for k, v in process_tags().items():
                client.set_tag(rid, k, v)
            if "error" in client.get_run(rid).data.tags:      # reaped after a kill: resumed, no longer failed
                client.set_tag(rid, "resumed_after", client.get_run(rid).data.tags["error"][:500])
                client.delete_tag(rid, "error")
            return rid
        from harness.tracking import git_state, package_versions, process_tags
        import harness
        sha, dirty = git_state()
        all_tags = {**{k: str(v) for k, v in tags.items()}, "git_sha": sha, "git_dirty": str(dirty),
                    "harness_version": harness.__version__, "config_hash": self.hash, **process_tags()}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        rid = client.create_run(self.tracker.experiment_id, run_name=name, tags=all_tags).info.run_id
        for k, v in params.items():
            client.log_param(rid, k, str(v)[:6000])
        client.log_text(rid, json.dumps(to_dict(self.cfg), indent=1), "config.json")
        client.log_text(rid, json.dumps(package_versions(), indent=1), "packages.json")
        self.runs[key] = rid
        self.save()
        return rid

    def log(self, rid: str | None, metrics: dict, step: int | None = None) -> None:
        if rid is None:
            return
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 900):
            self.tracker.client.log_batch(rid, metrics=batch[i:i + 900])

    def mark_unfinished(self, error: BaseException) -> None:
        """Every run left RUNNING becomes FAILED (KILLED on Ctrl-C / SIGTERM) with an ``error`` tag."""
        if not self.tracked:
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        for rid in self.runs.values():
            try:
                if self.tracker.client.get_run(rid).info.status == "RUNNING":
                    self.tracker.client.set_tag(rid, "error", f"{type(error).__name__}: {error}"[:500])
                    self.tracker.client.set_terminated(rid, status)
            except Exception:  # noqa: BLE001 - never hide the original error
                log.exception("could not mark run %s %s", rid, status)


def data_tags(stage_paths: dict[int, str]) -> dict[str, str]:
    """What an ablation varies in the spatial QA data, from the ``dataset_card.json`` beside the last stage's
    conversation file (the chain-of-thought data the paper's ablations vary): reasoning levels and their order
    (Tables 7, 15), views (single / multi / a mix, Tables 7, 16), unique conversations (Table 18) and whether
    depth / masks came from ground truth or estimators (Table 19). Missing or unreadable card: no tags (a run
    on hand-made data is still a valid boost, the report just cannot group it by these)."""
    if not stage_paths:
        return {}
    last = stage_paths[max(stage_paths)]
    if not last:
        return {}
    card_path = Path(last).expanduser().parent / "dataset_card.json"
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return {}
    parts = card.get("parts") or [card]         # a mixed file lists its parts (views 1 + views 2, ...)
    opts = [p.get("options") or {} for p in parts]
    if not all(opts):
        return {}
    levels = ",".join(dict.fromkeys(lv for o in opts for lv in o.get("levels", [])))
    views = ",".join(f"{o.get('views', 1)}:{p.get('samples', '')}" for o, p in zip(opts, parts)) \
        if len(parts) > 1 else str(opts[0].get("views", 1))
    sources = {_source(p.get("estimators") or {}) for p in parts}
    return {"boost.data.levels": levels, "boost.data.order": "+".join(dict.fromkeys(o.get("order", "") for o in opts)),
            "boost.data.views": views, "boost.data.samples": str(sum(int(p.get("samples", 0)) for p in parts)),
            "boost.data.source": "+".join(sorted(sources))}


def _source(estimators: dict) -> str:
    """``gt`` when depth and masks are the source's ground truth, else the estimators' names
    (``depth=DepthPro,segmenter=SAM``)."""
    est = {k: v for k, v in estimators.items() if k in ("depth", "segmenter", "reconstructor")
           and v and not str(v).startswith("ground truth")}
    return ",".join(f"{k}={v}" for k, v in sorted(est.items())) or "gt"
