"""``spatialboost report``: the paper's tables (and a summary) from an experiment's runs.

First section after the notes: the signal check (does each baseline beat its floor and its random-init
encoder on every suite's primary metric, CI excluding 0?). Per-sample records are downloaded at most once
per run for the whole build (one :class:`PerSampleStore`).

Files (each written atomically), for experiment ``E`` in the output folder: ``E.md``, ``E.tex``,
``E.html`` (plots embedded) and ``E-plots/<name>.png`` (the same plots as files);
:func:`reports.publish.log_report_run` logs them to the experiment's report run.
"""
from __future__ import annotations

from pathlib import Path

from harness.atomic import atomic_write
from reports.ablations import ABLATIONS, build_ablation, present
from reports.plots import PLOTS, ablation_curve, data_uri, report_plots
from reports.render import signal_latex, signal_markdown, to_html, to_latex, to_markdown
from reports.tables import LAYOUTS, build_table, summary_layout
from results.runs import ResultsError, check_conflicts, drop_superseded, latest_per_config, load_runs
from results.samples_store import PerSampleStore

FORMATS = ("md", "tex", "html")
RESAMPLES = 2000
SEED = 0


def report_stem(out_dir: Path, experiment: str) -> Path:
    """``out_dir/<experiment>`` (a ``/`` in the name becomes ``_``): the reports' path without suffix."""
    return Path(out_dir) / experiment.replace("/", "_")


def plots_dir(out_dir: Path, experiment: str) -> Path:
    stem = report_stem(out_dir, experiment)
    return stem.with_name(stem.name + "-plots")


class ReportFiles(dict):
    """format -> written path (what callers print), plus what the report was built from: the tables
    (``tables``), the evaluation runs behind its numbers (``source_run_ids``) and its plot files."""

    def __init__(self, experiment: str, tables: list[str], source_run_ids: list[str]):
        super().__init__()
        self.experiment = experiment
        self.tables = tables
        self.source_run_ids = source_run_ids
        self.plots: dict[str, Path] = {}


def build_report(tracking_uri: str, experiment: str, out_dir: Path, tables: list[str] | None = None,
                 formats=FORMATS, notes: list[str] | None = None, allow_missing: bool = False,
                 resamples: int = RESAMPLES, seed: int = SEED) -> ReportFiles:
    """Write the report; ``allow_missing`` skips runs whose results cannot be read (listed in the notes)
    instead of failing; ``resamples=0`` leaves the Δ rows without CIs (and downloads no per-sample data)."""
    from harness.registry import SUITES
    unknown = [t for t in tables or [] if t not in LAYOUTS and t not in ABLATIONS and t != "summary"]
    if unknown:
        raise ValueError(f"unknown table '{unknown[0]}'; tables: summary, {', '.join(LAYOUTS)}, "
                         f"{', '.join(ABLATIONS)} (ablations)")
    skipped: list = []
    df, superseded = drop_superseded(load_runs(tracking_uri, experiment, allow_missing=allow_missing,
                                               skipped=skipped))
    df = latest_per_config(df)
    if df.empty:
        raise ResultsError(f"experiment '{experiment}' has no finished evaluation run with metrics"
                           + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    check_conflicts(df)
    keys = tables or ["summary", *LAYOUTS, *present(df)]     # ablation tables: those the runs vary
    registered = set(SUITES.names())
    with PerSampleStore(tracking_uri) as store:
        samples = store if resamples > 0 else None
        built = [build_ablation(df, ABLATIONS[k], registered, samples, resamples, seed) if k in ABLATIONS
                 else build_table(df, summary_layout(df) if k == "summary" else LAYOUTS[k], registered, samples,
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
    notes += [f"SKIPPED {s}" for s in skipped] + [f"SUPERSEDED {n}" for n in superseded]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportFiles(experiment, keys, sorted(set(df["run_id"])))
    stem = report_stem(out_dir, experiment)
    pngs = report_plots(df)
    for t in built:
        if t.layout.key in ABLATIONS and ABLATIONS[t.layout.key].x:
            fig = ablation_curve(t)
            if fig is not None:
                from reports.plots import png_bytes
                pngs[t.layout.key] = png_bytes(fig)
    for name, png in pngs.items():
        paths.plots[name] = _write(plots_dir(out_dir, experiment) / f"{name}.png", png)
    for old in plots_dir(out_dir, experiment).glob("*.png"):   # a plot an earlier build had, this one not
        if old.stem not in pngs:
            old.unlink()
    if "md" in formats:
        md = [f"# {title}", ""] + [f"- {n}" for n in notes] + ["", signal_markdown(signal)]
        md += [to_markdown(t) for t in built]
        paths["md"] = _write(stem.with_suffix(".md"), "\n".join(md))
    if "tex" in formats:
        paths["tex"] = _write(stem.with_suffix(".tex"), "\n".join([signal_latex(signal)]
                                                                  + [to_latex(t) for t in built]))
    if "html" in formats:
        plots = [(caption, data_uri(pngs[name])) for name, caption in PLOTS if name in pngs]
        plots += [(ABLATIONS[k].title + " (Δ vs base, paired 95 % CI band)", data_uri(pngs[k]))
                  for k in ABLATIONS if k in pngs]
        paths["html"] = _write(stem.with_suffix(".html"), to_html(title, built, plots, notes, signal))
    return paths


def _write(path: Path, data: str | bytes) -> Path:
    return atomic_write(path, data)
