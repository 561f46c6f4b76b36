"""The report in MLflow: one *report run* per distinct report build, in the experiment it reports on.

Users look at MLflow, not at the workspace folder, so the Markdown/LaTeX/HTML report and its plots are
logged as artifacts of a run tagged ``kind=report`` (``report.md``, ``report.tex``, ``report.html``,
``plots/<name>.png``, and ``report.json`` = what it was built from). Its params name the experiment and
the tables; its tags list the evaluation runs behind the numbers (``source_run_ids``). The results
frame (:func:`results.runs.load_runs`) leaves report runs out, so a report never reports on a report.

A rebuild that produces byte-identical files (same runs, same code) reuses the existing report run
instead of adding another (tag ``report_hash``).
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Sequence

from results.runs import REPORT_KIND

__all__ = ["log_report_run", "report_artifacts"]

MAX_TAG = 5000          # MLflow caps tag values; the full list is in report.json


def report_artifacts(report_dir: str | Path, experiment: str,
                     formats: Sequence[str] = ("md", "tex", "html")) -> dict[str, Path]:
    """artifact name -> local file: the experiment's reports in ``report_dir`` (as written by
    :func:`reports.build.build_report`; only ``formats``) and its plots."""
    from reports.build import plots_dir, report_stem
    stem = report_stem(Path(report_dir), experiment)
    out = {f"report.{fmt}": stem.with_suffix(f".{fmt}") for fmt in formats
           if stem.with_suffix(f".{fmt}").is_file()}
    for png in sorted(plots_dir(Path(report_dir), experiment).glob("*.png")):
        out[f"plots/{png.name}"] = png
    return out


def log_report_run(tracking_uri: str, experiment: str, report_dir: str | Path, source_run_ids: Sequence[str],
                   tables: Sequence[str] = (), artifact_root: str | Path | None = None,
                   formats: Sequence[str] = ("md", "tex", "html")) -> str:
    """Log the experiment's report files from ``report_dir`` to a report run of ``experiment``; returns
    its run id (an existing one when an identical report was logged before).

    ``source_run_ids``: the evaluation runs the report was built from (``ReportFiles.source_run_ids``);
    ``tables``: the table keys it shows (``ReportFiles.tables``); ``formats``: the formats this build
    wrote (``list(ReportFiles)``), so an older file of another format in the folder is not logged.
    """
    import json

    from harness.errors import UserError
    from harness.tracking import Tracker

    files = report_artifacts(report_dir, experiment, formats)
    if not any(name.startswith("report.") for name in files):
        raise UserError(f"no report of experiment '{experiment}' in {report_dir}: build it first "
                        "(spatialboost report)")
    ids = sorted(set(source_run_ids))
    h = hashlib.sha256(json.dumps([experiment, list(tables), ids]).encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].read_bytes())
    digest = h.hexdigest()[:16]
    tracker = Tracker(tracking_uri, experiment, Path(artifact_root) if artifact_root else None)
    same = tracker.client.search_runs(
        [tracker.experiment_id], max_results=1,
        filter_string=f"tags.kind = '{REPORT_KIND}' and tags.report_hash = '{digest}' and "
                      "attributes.status = 'FINISHED'")
    if same:
        return same[0].info.run_id
    joined = ",".join(ids)
    tags = {"kind": REPORT_KIND, "report_hash": digest, "source_run_count": len(ids),
            "source_run_ids": joined if len(joined) <= MAX_TAG else joined[:joined.rfind(",", 0, MAX_TAG)],
            "source_run_ids_complete": str(len(joined) <= MAX_TAG).lower(),
            "mlflow.note.content": f"Report on experiment `{experiment}` built from {len(ids)} runs: open "
                                   "report.html in the artifacts (report.md, report.tex, plots/)."}
    params = {"experiment": experiment, "tables": ",".join(tables) or "(all)",
              "formats": ",".join(n.split(".", 1)[1] for n in sorted(files) if n.startswith("report."))}
    manifest = {"experiment": experiment, "tables": list(tables), "source_run_ids": ids,
                "files": sorted(files), "report_hash": digest}
    with tracker.start(f"report: {experiment}", tags, params, manifest) as logger:
        logger.log_dict(manifest, "report.json")
        with tempfile.TemporaryDirectory(prefix="spatialboost-report-run-") as tmp:
            for name, path in files.items():       # copied under their artifact names (report.md, plots/...)
                dest = Path(tmp) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
            logger.log_artifact(tmp)
        return logger.run_id
