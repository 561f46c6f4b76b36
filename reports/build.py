"""``spatialboost report``: the paper's tables (and a summary) from an experiment's runs."""
from __future__ import annotations

from pathlib import Path

from reports.plots import primary_bars, scaling_curves
from reports.render import to_html, to_latex, to_markdown
from reports.tables import LAYOUTS, build_table, summary_layout
from results.runs import check_conflicts, latest_per_config, load_runs

FORMATS = ("md", "tex", "html")


def build_report(tracking_uri: str, experiment: str, out_dir: Path, tables: list[str] | None = None,
                 formats=FORMATS, notes: list[str] | None = None) -> dict[str, Path]:
    from harness.registry import SUITES
    df = latest_per_config(load_runs(tracking_uri, experiment))
    check_conflicts(df)
    unknown = [t for t in tables or [] if t not in LAYOUTS and t != "summary"]
    if unknown:
        raise ValueError(f"unknown table '{unknown[0]}'; tables: summary, {', '.join(LAYOUTS)}")
    keys = tables or ["summary", *LAYOUTS]
    layouts = [summary_layout(df) if k == "summary" else LAYOUTS[k] for k in keys]
    registered = set(SUITES.names())
    built = [build_table(df, layout, registered) for layout in layouts]
    title = f"SpatialBoost report: {experiment}"
    notes = list(notes or []) + [f"{len(set(df['run_id']))} finished runs; cells are means over seeds "
                                 "(± std when several); bold = better of a baseline/boosted pair; "
                                 "hover a cell (HTML) for its MLflow run ids"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    stem = out_dir / experiment.replace("/", "_")
    if "md" in formats:
        md = [f"# {title}", ""] + [f"- {n}" for n in notes] + [""] + [to_markdown(t) for t in built]
        paths["md"] = _write(stem.with_suffix(".md"), "\n".join(md))
    if "tex" in formats:
        paths["tex"] = _write(stem.with_suffix(".tex"), "\n".join(to_latex(t) for t in built))
    if "html" in formats:
        plots = [(c, u) for c, u in (("Primary metric per suite", primary_bars(df)),
                                     ("Data scaling (paper Figure 5)", scaling_curves(df))) if u]
        paths["html"] = _write(stem.with_suffix(".html"), to_html(title, built, plots, notes))
    return paths


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
