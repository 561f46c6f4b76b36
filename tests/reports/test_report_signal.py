"""Reference rows, paired CIs in the Δ rows, the signal check, and runs that cannot be read."""
import json

import numpy as np
import pytest

from harness.tracking import Tracker
from reports.build import build_report
from reports.tables import LAYOUTS, build_table
from results.runs import ResultsError, latest_per_config, load_runs
from results.samples_store import PerSampleStore
from signal_fixtures import BASE, BOOST, RANDOM, log_run, samples

D = {"rmse": "min", "lin.rmse": "min"}
C = {"top1": "max", "lin.top1": "max", "knn.top1": "max"}
N = 200
IDS = [f"img{i:03d}" for i in range(N)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Depth: boosted far better (bold), random-init nearly equal (n.s.), floor far worse.
    Classification: boosted differs by one sample (n.s.), kNN scored on a different split (unpaired).
    MetaWorld: one run holding its own seed std."""
    tmp = tmp_path_factory.mktemp("signal")
    uri = f"sqlite:///{tmp}/mlflow.db"
    t = Tracker(uri, "sig", tmp / "artifacts")
    rng = np.random.default_rng(0)
    err = 1.0 + rng.gamma(2.0, 0.2, N)
    floor_err = err + 0.4 + rng.normal(0, 0.1, N)
    ids = {}
    ids["base_depth"] = log_run(t, BASE, "depth.nyud", "linear", "lin.rmse", D, {
        "lin.rmse": samples(IDS, err),
        "floor.rmse": samples(IDS, floor_err),
        "floor_permap.rmse": samples(IDS, floor_err - 0.1)},
        details={"floor": {"rule": "floor = train-mean depth; floor_permap = per-pixel train mean"}})
    ids["random_depth"] = log_run(t, RANDOM, "depth.nyud", "linear", "lin.rmse", D,
                                  {"lin.rmse": samples(IDS, err + 1e-4 * rng.normal(size=N))},
                                  tags={"random_of": BASE})
    ids["boost_depth"] = log_run(t, BOOST, "depth.nyud", "linear", "lin.rmse", D,
                                 {"lin.rmse": samples(IDS, err - 0.3 + rng.normal(0, 0.05, N))},
                                 tags={"boosted_from": BASE, "boost.lm": "builtin:tiny-qwen2",
                                       "boost.lm_random": "1", "boost.steps": "1:1,2:1,3:4",
                                       "boost.samples": "1:4,2:4,3:16", "boost.run_id": "feedbeef12345678"})
    correct = (rng.random(N) < 0.6).astype(float)
    flipped = correct.copy()
    flipped[0] = 1 - flipped[0]
    other_split = IDS[7:] + [f"other{i}" for i in range(7)]
    ids["base_cls"] = log_run(t, BASE, "cls.imagenet", "linear,knn", "lin.top1", C, {
        "lin.top1": samples(IDS, correct, scale=100), "knn.top1": samples(IDS, correct, scale=100),
        "floor.top1": samples(IDS, rng.random(N) < 0.1, scale=100, meta={"what": "majority class"})})
    ids["boost_cls"] = log_run(t, BOOST, "cls.imagenet", "linear,knn", "lin.top1", C, {
        "lin.top1": samples(IDS, flipped, scale=100), "knn.top1": samples(other_split, flipped, scale=100)},
        tags={"boosted_from": BASE})
    ids["base_mw"] = log_run(t, BASE, "cortexbench.metaworld", "bc", "success", {"success": "max"},
                             metrics={"success": 80.0, "success.std": 5.0})
    return uri, t, ids, tmp, floor_err


@pytest.fixture(scope="module")
def report(store):
    uri, _, _, tmp, _ = store
    paths = build_report(uri, "sig", tmp / "out")
    return {k: p.read_text() for k, p in paths.items()}


def _rows(md, start, end=None):
    part = md[md.index(start):md.index(end) if end else None]
    return {l.split(" | ")[0].strip("| `_"): l for l in part.splitlines() if l.startswith("| ")}


def test_floor_and_random_rows_equal_logged_values(store):
    uri, t, ids, _, floor_err = store
    df = latest_per_config(load_runs(uri, "sig"))
    with PerSampleStore(uri) as s:
        table = build_table(df, LAYOUTS["table1"], {"depth.nyud"}, s, 1000, 0)
    by = {r.label: r for r in table.rows}
    logged = t.client.get_run(ids["base_depth"]).data.metrics
    floor = by["floor (train-mean depth)"].cells[0]
    assert floor.mean == logged["floor.rmse"] == pytest.approx(floor_err.mean())
    assert floor.run_ids == (ids["base_depth"],) and floor.metric == "floor.rmse"
    assert by["floor (per-pixel train mean)"].cells[0].mean == logged["floor_permap.rmse"]
    rnd = by["random-init"].cells[0]
    assert rnd.mean == t.client.get_run(ids["random_depth"]).data.metrics["lin.rmse"]
    assert [r.kind for r in table.rows] == ["baseline", "boosted", "delta", "floor", "delta", "floor", "delta",
                                            "random", "delta"]
    assert all(r.reference for r in table.rows[3:])
    d = table.rows[4].cells[0]                          # baseline - floor, paired on the same images
    assert d.ci.paired and d.ci.delta == pytest.approx(logged["lin.rmse"] - logged["floor.rmse"])


def test_large_delta_bold_tiny_delta_not_significant(report):
    md = report["md"]
    t1 = _rows(md, "### Table 1", "### Table 2")
    boosted = next(l for k, l in t1.items() if k.startswith("+SpatialBoost"))
    assert "+SpatialBoost dinov2-s14-focus (boost feedbeef, tiny-qwen2, 1/1/4 steps) (random LM)" in boosted
    assert "/tmp/ws" not in boosted                                 # readable, not the workspace path
    assert "| **1.07** |" in boosted                                # better and significant: bold
    assert t1["Δ"].split(" | ")[1].startswith("**-0.3") and "[" in t1["Δ"]
    rnd = t1["Δ baseline − random-init"].split(" | ")[1]
    assert rnd.endswith("n.s.") and "**" not in rnd
    floor = t1["Δ baseline − floor"].split(" | ")[1]
    assert floor.startswith("**-0.4") and "n.s." not in floor
    t5 = _rows(md, "### Table 5", "### Table 8")
    knn, lin = t5["Δ"].split(" | ")[1:3]
    assert lin.startswith("-0.50 [") and lin.endswith("n.s.") and "**" not in lin     # one sample flipped
    assert "unpaired" in knn and "**" not in knn                                    # different splits


def test_unpaired_note_names_both_runs(report, store):
    _, _, ids, _, _ = store
    note = next(l for l in report["md"].splitlines() if "ImageNet kNN: unpaired" in l)
    assert f"7 only in run {ids['base_cls']}" in note and f"7 only in run {ids['boost_cls']}" in note


def test_signal_check_section(report):
    md = report["md"]
    sig = md[md.index("## Signal check"):md.index("### Summary")]
    depth = next(l for l in sig.splitlines() if "depth.nyud lin.rmse" in l)
    vs_floor, vs_random = depth.split(" | ")[2:4]
    # two floors logged: the check is against the harder (per-pixel map, 0.1 closer), named
    assert vs_floor.startswith("✓ ") and "(per-pixel train mean): Δ -0.3" in vs_floor
    assert vs_random.startswith("✗ ") and "n.s." in vs_random           # indistinguishable from random
    cls = next(l for l in sig.splitlines() if "cls.imagenet lin.top1" in l)
    assert "✓" in cls.split(" | ")[2] and "? " in cls.split(" | ")[3]   # no random-init run there
    assert md.index("## Signal check") < md.index("### Summary")       # the first thing a reader sees
    html = report["html"]
    assert "<table id='signal'>" in html and "class='ok'" in html and "class='bad'" in html
    assert "tr class='floor reference'" in html and "random-init" in html
    assert "Signal check" in report["tex"]


def test_run_std_is_the_seed_std_of_table4(report):
    t4 = _rows(report["md"], "### Table 4", "### Table 5")
    assert "| - | 80.00 ± 5.00 |" in t4[BASE]


def test_hover_and_comments_hold_spec_and_runs(report, store):
    _, _, ids, _, _ = store
    assert f"title='{BOOST}; runs " in report["html"]
    tex_row = next(l for l in report["tex"].splitlines() if l.startswith("+SpatialBoost")
                   and ids["boost_depth"] in l)
    assert f"% {BOOST}; runs: " in tex_row
    assert r"\textcolor{gray}{random-init}" in report["tex"]


def test_missing_per_sample_is_noted_not_bold(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t, tmp = Tracker(uri, "sig", tmp_path / "artifacts"), tmp_path
    log_run(t, BASE, "retrieval.roxford", "knn", "mAP.H", {"mAP.H": "max"}, metrics={"mAP.H": 40.0})
    log_run(t, BOOST, "retrieval.roxford", "knn", "mAP.H", {"mAP.H": "max"}, metrics={"mAP.H": 90.0},
            tags={"boosted_from": BASE})
    md = build_report(uri, "sig", tmp / "out2", tables=["table5"], formats=("md",))["md"].read_text()
    row = _rows(md, "### Table 5")
    assert row["Δ"].split(" | ")[4] == "+50.00 (no CI)"
    assert "| 90.00 |" in next(l for k, l in row.items() if k.startswith("+SpatialBoost"))   # not bold
    assert "Oxford-H: no CI, run " in md and "has no per_sample/ artifacts" in md


def test_per_sample_downloads_cached_per_run(store):
    uri, _, ids, _, _ = store
    df = latest_per_config(load_runs(uri, "sig"))
    with PerSampleStore(uri) as s:
        for key in ("table1", "table5", "table8"):
            build_table(df, LAYOUTS[key], {"depth.nyud", "cls.imagenet"}, s, 200, 0)
        first = s.downloads
        build_table(df, LAYOUTS["table1"], {"depth.nyud"}, s, 200, 0)
        assert s.downloads == first <= len(ids)


def test_unreadable_run_fails_naming_it_or_is_listed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t = Tracker(uri, "bad", tmp_path / "artifacts")
    good = log_run(t, BASE, "depth.nyud", "linear", "lin.rmse", D, {"lin.rmse": samples(IDS, np.ones(N))})
    with t.start("broken", {"encoder": "x:y", "suite": "depth.nyud", "config_hash": "h"}, {}, {}) as log:
        log.log_metrics({"lin.rmse": 1.0})                     # no result.json
        bad = log.run_id
    with pytest.raises(ResultsError, match=f"run {bad} \\(x:y on depth.nyud\\): cannot read its result.json"):
        build_report(uri, "bad", tmp_path / "out")
    md = build_report(uri, "bad", tmp_path / "out", allow_missing=True, formats=("md",))["md"].read_text()
    assert f"SKIPPED run {bad} (x:y on depth.nyud): run {bad}" in md and good in md
    with t.start("tagged", {"encoder": "x:z", "suite": "depth.nyud", "config_hash": "h2",
                            "metric_directions": json.dumps({"lin.rmse": "up"})}, {}, {}) as log:
        log.log_metrics({"lin.rmse": 1.0})
    with t.start("tag-only", {"encoder": "x:w", "suite": "depth.nyud", "config_hash": "h3",
                              "metric_directions": json.dumps({"lin.rmse": "min"})}, {}, {}) as log:
        log.log_metrics({"lin.rmse": 2.0})                     # directions from the tag, no result.json
        tagged = log.run_id
    skipped = []
    df = load_runs(uri, "bad", allow_missing=True, skipped=skipped)
    assert df[df["run_id"] == tagged][["metric", "value", "direction"]].values.tolist() == [["lin.rmse", 2.0, "min"]]
    assert sorted(s.what for s in skipped) == ["x:y on depth.nyud", "x:z on depth.nyud"]
    assert any("must map metric names to 'max'/'min'" in s.reason for s in skipped)


def test_boost_samples_tag_formats(store):
    from results.runs import boost_samples
    assert boost_samples("1:4,2:4,3:16") == 16.0 and boost_samples("250") == 250.0
    assert np.isnan(boost_samples("")) and np.isnan(boost_samples("a:b"))
    df = load_runs(store[0], "sig")
    assert set(df[df["encoder"] == BOOST]["boost_samples"].dropna()) == {16.0}


def test_floor_descriptions_from_result_details():
    from reports.tables import floor_description
    depth = {"floor": {"rule": "floor = train mean depth everywhere; floor_map = per-pixel train mean map"}}
    assert floor_description(depth, "floor") == "train mean depth everywhere"
    assert floor_description(depth, "floor_map") == "per-pixel train mean map"
    seg = {"floor": {"rule": "the majority class of the training labels predicted at every pixel"}}
    assert floor_description(seg, "floor") == seg["floor"]["rule"] and floor_description(seg, "floor_x") == ""
    cb = {"floors": {"floor": "mean training action", "floor_proprio": "proprioception alone"}}
    assert floor_description(cb, "floor_proprio") == "proprioception alone"
    assert floor_description({}, "floor") == ""


def _check(base_mean, ref_mean, low, high, label, reference="floor", direction="min"):
    from reports.tables import Cell, Check, Column
    from results.stats import DeltaCI
    col = Column("NYUd", "lin.", "depth.nyud", "lin.rmse")
    d = Cell(base_mean - ref_mean, direction=direction)
    d.ci = DeltaCI(base_mean - ref_mean, low, high, 100, True, 1000)
    return Check("enc", col, reference, Cell(base_mean, direction=direction), Cell(ref_mean, direction=direction),
                 d, label)


def test_signal_check_fails_when_any_floor_is_not_beaten():
    """A baseline far under the mean-depth floor but not under the per-pixel map floor does not separate: the
    check shows ✗ against the map floor, named, however large its margin over the other floor."""
    from reports.render import hardest_check, signal_rows
    from reports.tables import LAYOUTS, Table
    easy = _check(0.80, 1.30, -0.55, -0.45, "train mean depth everywhere")
    hard = _check(0.80, 0.82, -0.06, 0.02, "per-pixel train mean map")
    rnd = _check(0.80, 1.20, -0.45, -0.35, "", reference="random-init")
    assert hardest_check([easy, hard]) is hard
    (_, _, vs_floor, vs_random), = signal_rows(Table(LAYOUTS["table1"], [], [], [], [easy, hard, rnd]))
    assert vs_floor.startswith("✗ 0.80 vs 0.82 (per-pixel train mean map): Δ")
    assert vs_random.startswith("✓ 0.80 vs 1.20: Δ")                  # one reference: not named
    closer = _check(0.80, 0.90, -0.12, -0.08, "per-pixel train mean map")   # both beaten: the smaller margin
    assert hardest_check([easy, closer]) is closer
    acc_easy = _check(0.9, 0.5, 0.35, 0.45, "majority", direction="max")
    acc_cue = _check(0.9, 0.8, 0.05, 0.15, "2D shortcut", direction="max")   # higher-is-better: same rule
    assert hardest_check([acc_easy, acc_cue]) is acc_cue
