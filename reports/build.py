"""``spatialboost report``: the paper's tables (and a summary) from an experiment's runs.

First section after the notes: the signal check (does each baseline beat its floor and its random-init
encoder on every suite's primary metric, CI excluding 0?). Per-sample records are downloaded at most once
per run for the whole build (one :class:`PerSampleStore`).
"""
from __future__ import annotations

from pathlib import Path

from reports.plots import primary_bars, scaling_curves
from reports.render import signal_latex, signal_markdown, to_html, to_latex, to_markdown
from reports.tables import LAYOUTS, build_table, summary_layout
from results.runs import ResultsError, check_conflicts, latest_per_config, load_runs
from results.samples_store import PerSampleStore

FORMATS = ("md", "tex", "html")
RESAMPLES = 2000
SEED = 0


def build_report(tracking_uri: str, experiment: str, out_dir: Path, tables: list[str] | None = None,
                 formats=FORMATS, notes: list[str] | None = None, allow_missing: bool = False,
                 resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Path]:
    """Write the report; ``allow_missing`` skips runs whose results cannot be read (listed in the notes)
    instead of failing; ``resamples=0`` leaves the Δ rows without CIs (and downloads no per-sample data)."""
    from harness.registry import SUITES
    unknown = [t for t in tables or [] if t not in LAYOUTS and t != "summary"]
    if unknown:
        raise ValueError(f"unknown table '{unknown[0]}'; tables: summary, {', '.join(LAYOUTS)}")
    skipped: list = []
    df = latest_per_config(load_runs(tracking_uri, experiment, allow_missing=allow_missing, skipped=skipped))
    if df.empty:
        raise ResultsError(f"experiment '{experiment}' has no finished evaluation run with metrics"
                           + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    check_conflicts(df)
    keys = tables or ["summary", *LAYOUTS]
    registered = set(SUITES.names())
    with PerSampleStore(tracking_uri) as store:
        samples = store if resamples > 0 else None
        built = [build_table(df, summary_layout(df) if k == "summary" else LAYOUTS[k], registered, samples,
                             resamples, seed) for k in keys]
        signal = next((t for t, k in zip(built, keys) if k == "summary"), None)
        if signal is None:
            signal = build_table(df, summary_layout(df), registered, samples, resamples, seed)
    title = f"SpatialBoost report: {experiment}"
    notes = list(notes or []) + [f"{len(set(df['run_id']))} finished runs; cells are means over seeds "
                                 "(± std over seeds: across runs, or the run's own when it ran its seeds); "
                                 f"Δ rows carry a bootstrap 95 % CI ({resamples} resamples, seed {seed}) from "
                                 "the runs' per-sample records, paired on shared sample ids; bold = the CI "
                                 "excludes 0; greyed rows are references (floor = a trivial predictor on the "
                                 "same split, random-init = the baseline's architecture with random weights); "
                                 "hover a cell (HTML) for its MLflow run ids"]
    notes += [f"SKIPPED {s}" for s in skipped]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    stem = out_dir / experiment.replace("/", "_")
    if "md" in formats:
        md = [f"# {title}", ""] + [f"- {n}" for n in notes] + ["", signal_markdown(signal)]
        md += [to_markdown(t) for t in built]
        paths["md"] = _write(stem.with_suffix(".md"), "\n".join(md))
    if "tex" in formats:
        paths["tex"] = _write(stem.with_suffix(".tex"), "\n".join([signal_latex(signal)]
                                                                  + [to_latex(t) for t in built]))
    if "html" in formats:
        plots = [(c, u) for c, u in (("Primary metric per suite", primary_bars(df)),
                                     ("Data scaling (paper Figure 5)", scaling_curves(df))) if u]
        paths["html"] = _write(stem.with_suffix(".html"), to_html(title, built, plots, notes, signal))
    return paths


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
