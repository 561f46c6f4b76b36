"""Reports from MLflow runs: layouts, baseline -> boosted -> delta rows, provenance, errors, a real browser."""
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from harness.tracking import Tracker
from reports.build import build_report
from results.runs import ResultsError

BASE = "timm:vit_small_patch14_dinov2?ckpt=base.pth"
BOOST = "boosted:/ckpts/dinov2-sb"
D = {"rmse": "min", "lin.rmse": "min"}


def _log(tracker, encoder, suite, head, metrics, primary, directions, seed=0, boosted_from="", chash=None,
         version=None):
    tags = {"encoder": encoder, "suite": suite, "head": head, "seed": seed, "primary_metric": primary,
            "boosted_from": boosted_from, "config_hash": chash or f"{encoder}-{suite}-{head}-{seed}",
            "dataset": "d", "mode": "fast", **({"suite_version": version} if version else {})}
    with tracker.start(f"{suite}/{encoder}", tags, {}, {}) as log:
        log.log_metrics(metrics)
        log.log_dict({"metric_directions": directions}, "result.json")
        return log.run_id


@pytest.fixture
def runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t = Tracker(uri, "paper", tmp_path / "artifacts")
    ids = {}
    for seed, (b, s) in enumerate([(4.0, 3.0), (6.0, 3.5)]):   # depth rmse (lower is better), 2 seeds
        ids[("base", seed)] = _log(t, BASE, "depth.nyud", "linear", {"rmse": b, "lin.rmse": b}, "rmse", D, seed)
        ids[("boost", seed)] = _log(t, BOOST, "depth.nyud", "linear", {"rmse": s, "lin.rmse": s}, "rmse", D, seed,
                                    boosted_from=BASE)
    _log(t, BASE, "cls.imagenet", "linear,knn", {"lin.top1": 70.0, "knn.top1": 60.0}, "lin.top1",
         {"lin.top1": "max", "knn.top1": "max"})
    _log(t, BOOST, "cls.imagenet", "linear,knn", {"lin.top1": 69.0, "knn.top1": 65.0}, "lin.top1",
         {"lin.top1": "max", "knn.top1": "max"}, boosted_from=BASE)
    return uri, t, ids


def test_tables_rows_deltas_and_provenance(runs, tmp_path):
    uri, _, ids = runs
    paths = build_report(uri, "paper", tmp_path / "out")
    md = paths["md"].read_text()
    t1 = md[md.index("### Table 1"):md.index("### Table 2")]
    lines = [l for l in t1.splitlines() if l.startswith("| ")]
    assert lines[1].startswith(f"| `{BASE}` | 5.00 ± 1.41 |")                # mean ± std over two seeds
    # short readable name (not the checkpoint path); no per-sample records, so no CI and nothing bold
    assert lines[2].startswith("| +SpatialBoost vit_small_patch14_dinov2 (boost dinov2-sb) | 3.25 ± 0.35 |")
    assert lines[3].startswith("| Δ | -1.75 (no CI) |")
    assert "has no per_sample/ artifacts" in t1
    assert f"`{BOOST}`" in t1                                                  # full spec in the details
    assert "KITTI lin.: no finished depth.kitti run with head linear" in t1
    for key in [("base", 0), ("base", 1), ("boost", 0)]:
        assert ids[key] in t1                                                  # every cell traceable
    t5 = md[md.index("### Table 5"):md.index("### Table 8")]
    row = [l for l in t5.splitlines() if l.startswith("| +SpatialBoost")][0]
    assert "| 65.00 | 69.00 |" in row                         # kNN better, lin. worse: no CI, so no bold
    assert "no finished lexicon3d.scanqa run" in md       # registered (Lexicon3D), no run in this experiment
    tex = paths["tex"].read_text()
    assert r"\toprule" in tex and "3.25 $\\pm$ 0.35" in tex and r"$\Delta$" in tex and r"\textbf" not in tex
    html = paths["html"].read_text()
    assert f"data-runs='{ids[('base', 0)]},{ids[('base', 1)]}'" in html or \
           f"data-runs='{','.join(sorted([ids[('base', 0)], ids[('base', 1)]]))}'" in html
    assert "data:image/png;base64," in html


def test_cells_of_unregistered_suites_say_so(runs):
    from reports.tables import LAYOUTS, build_table
    from results.runs import latest_per_config, load_runs
    uri, _, _ = runs
    table = build_table(latest_per_config(load_runs(uri, "paper")), LAYOUTS["table3"], {"depth.nyud"})
    from reports.render import to_markdown
    assert "suite lexicon3d.scanqa is not implemented in this harness version" in to_markdown(table)


def test_unknown_experiment_lists_existing(runs, tmp_path):
    uri, _, _ = runs
    with pytest.raises(ResultsError, match="experiment 'nope' does not exist; experiments: .*paper"):
        build_report(uri, "nope", tmp_path / "out")


def test_conflicting_configs_for_one_cell(runs, tmp_path):
    uri, t, _ = runs
    _log(t, BASE, "depth.nyud", "linear", {"rmse": 9.0, "lin.rmse": 9.0}, "rmse", D, seed=0, chash="other-config")
    with pytest.raises(ResultsError, match="conflicting configs for one cell .*other-config"):
        build_report(uri, "paper", tmp_path / "out")


def test_a_newer_suite_version_supersedes_the_older_runs(runs, tmp_path):
    """A workspace rerun after a suite's version bump holds both versions' runs of a cell: the report keeps the
    newest version (its number, not the old one) and says what it left out, instead of refusing the cell."""
    from results.runs import _version_key
    uri, t, _ = runs
    for v, val in (("9", 9.0), ("10", 2.0)):          # "10" is newer than "9" (numeric, not string, order)
        _log(t, BASE, "depth.kitti", "linear", {"rmse": val, "lin.rmse": val}, "rmse", D, chash=f"kitti-v{v}",
             version=v)
    md = build_report(uri, "paper", tmp_path / "out")["md"].read_text()
    assert "SUPERSEDED depth.kitti: 1 run(s) of version 9 superseded by version 10 and left out" in md
    t1 = md[md.index("### Table 1"):md.index("### Table 2")]
    base = [l for l in t1.splitlines() if l.startswith(f"| `{BASE}`")][0]
    assert "| 2.00 |" in base and "9.00" not in base
    assert "depth.nyud" not in md.split("SUPERSEDED")[-1].splitlines()[0]     # untouched suites: no note
    assert sorted(["", "2.1", "10", "9", "2"], key=_version_key) == ["", "2", "2.1", "9", "10"]


def test_html_renders_in_headless_chromium(runs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is needed for this test (make setup installs it)"
    uri, _, _ = runs
    page = build_report(uri, "paper", tmp_path / "out", formats=("html",))["html"]
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<table id=\"table1\">" in dom and "+SpatialBoost" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10      # not a blank page
