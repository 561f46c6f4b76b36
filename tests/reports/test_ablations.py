"""Ablation layouts (reports/ablations.py): every table from a synthetic results frame, rows found by the
boost.* data tags, Δ + paired CI checked independently, and the report build from real MLflow runs."""
import numpy as np
import pandas as pd
import pytest

from harness.samples import PerSample
from reports.ablations import ABLATIONS, FULL, build_ablation, mix_ratio, present
from reports.tables import LAYOUTS
from results.runs import COLUMNS

BASE = "builtin:dinov2-s14-focus"
N = 300
IDS = [f"img{i:03d}" for i in range(N)]
DIRECTION = {"lin.top1": "max", "linear.mIoU": "max", "lin.rmse": "min", "bleu1": "max", "mIoU": "max"}
SUITE = {"lin.top1": "cls.imagenet", "linear.mIoU": "seg.ade20k", "lin.rmse": "depth.nyud",
         "bleu1": "lexicon3d.scanqa", "mIoU": "lexicon3d.semantic"}
HEAD = {"linear.mIoU": "linear", "lin.rmse": "linear"}
TAGS = {"boost_levels": "boost.data.levels", "boost_order": "boost.data.order", "boost_views": "boost.data.views",
        "boost_source": "boost.data.source", "boost_variant": "boost.variant", "boost_lm_random": "boost.lm_random",
        "boost_data_samples": "boost.data.samples"}


def variants() -> dict[str, dict]:
    """Boosted encoder -> tags: one boost of every row of every ablation (+ Table 18's sample counts)."""
    full = {**FULL, "boost_data_samples": "16"}
    out = {}

    def add(name, **over):
        out[f"boosted:/ws/boost/{name}/boosted"] = {**full, **over}
    add("full")
    add("reverse", boost_order="reverse")
    add("random", boost_order="random")
    add("mv", boost_views="2")
    add("sv8mv8", boost_views="1:8,2:8")
    add("sv11mv5", boost_views="1:11,2:5")          # the demo's "2/3 + 1/3" of 16 samples
    add("sv12mv12", boost_views="1:12,2:12", boost_data_samples="24")
    add("sv5mv11", boost_views="1:5,2:11")
    for lv in ("pix", "obj", "scene", "pix,obj", "pix,scene", "obj,scene"):
        add(lv.replace(",", "+"), boost_levels=lv)
    add("fullft", boost_variant="full")
    add("lora", boost_variant="lora")
    add("n8", boost_data_samples="8")
    add("n32", boost_data_samples="32")
    add("vfm", boost_source="segmenter=ColourSegmenter")
    add("randlm", boost_lm_random="1")
    return out


class FakeStore:
    """What build_ablation asks of a PerSampleStore: per-sample records by (run, metric), a CI cache."""

    def __init__(self, records):
        self.records = records
        self._c = {}

    def get(self, run_id, metric):
        return self.records.get((run_id, metric), f"run {run_id} has no per_sample/{metric}.npz")

    def cached(self, key, fn):
        if key not in self._c:
            self._c[key] = fn()
        return self._c[key]


@pytest.fixture(scope="module")
def frame():
    """One run per (encoder, metric): base errors/scores, each variant shifted by its own offset + noise."""
    rng = np.random.default_rng(0)
    base = {m: rng.normal(0.5, 0.1, N) for m in DIRECTION}
    rows, records = [], {}
    encs = {BASE: {}, **variants()}
    for k, (enc, tags) in enumerate(encs.items()):
        for metric in DIRECTION:
            shift = 0.0 if enc == BASE else 0.01 * (k % 7) - 0.02
            vals = base[metric] + shift + (0 if enc == BASE else rng.normal(0, 0.02, N))
            rid = f"r{k:02d}{metric.replace('.', '')}"
            records[(rid, metric)] = PerSample(IDS, vals)
            row = {c: "" for c in COLUMNS}
            row.update({"experiment": "e", "run_id": rid, "encoder": enc, "boosted_from": "" if enc == BASE else BASE,
                        "suite": SUITE[metric], "dataset": "d", "head": HEAD.get(metric, ""), "mode": "fast",
                        "metric": metric, "value": float(vals.mean()), "direction": DIRECTION[metric],
                        "primary": True, "seed": 0, "config_hash": rid, "start_time": k, "run_std": float("nan"),
                        "boost_samples": float("nan"), **tags})
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS)), records


REGISTERED = set(SUITE.values())
# the boosts each configs/ablations/<table>.yaml trains (names of variants())
CAMPAIGN = {"table6": ["randlm", "full"], "table7": ["reverse", "random", "full", "mv", "sv8mv8"],
            "table15": ["pix", "obj", "scene", "pix+obj", "pix+scene", "obj+scene", "full"],
            "table16": ["sv11mv5", "sv8mv8", "sv5mv11"], "table17": ["fullft", "lora", "full"],
            "table18": ["n8", "full", "n32"], "table19": ["vfm", "full"]}


def test_keys_do_not_collide_with_the_main_tables():
    assert not set(ABLATIONS) & set(LAYOUTS)
    assert set(ABLATIONS) == {"table6", "table7", "table15", "table16", "table17", "table18", "table19"}


@pytest.mark.parametrize("key", list(ABLATIONS))
def test_every_layout_builds_each_variant_as_a_row_with_delta_and_ci(frame, key):
    df, records = frame
    layout = ABLATIONS[key]
    keep = {BASE} | {f"boosted:/ws/boost/{n}/boosted" for n in CAMPAIGN[key]}
    df = df[df["encoder"].isin(keep)]       # one experiment per ablation: that campaign's boosts only
    t = build_ablation(df, layout, REGISTERED, FakeStore(records), resamples=300)
    assert t.rows[0].kind == "baseline" and t.rows[0].encoder == BASE
    boosted = [r for r in t.rows if r.kind == "boosted"]
    available = [v for v in layout.rows if not v.unavailable]
    if layout.x:
        assert [r.label for r in boosted] == ["8 samples", "16 samples", "32 samples"]     # ascending x
    else:
        labels = [v.label for v in layout.rows]
        if key == "table16":        # the actual split beside the proportion
            labels = [f"{v} ({n} samples)" for v, n in zip(labels, ("11 + 5", "8 + 8", "5 + 11"))]
        assert [r.label for r in boosted] == labels
    for r in boosted:
        if not r.encoder:           # a row the harness cannot produce: empty cells saying why
            assert all(c.mean is None and c.missing for c in r.cells)
            continue
        i = t.rows.index(r)
        d = t.rows[i + 1]
        assert d.kind == "delta" and d.encoder == r.encoder
        for c, dc, bc in zip(r.cells, d.cells, t.rows[0].cells):
            assert c.run_ids and len(c.run_ids) == 1                      # traceable to its run
            assert dc.mean == pytest.approx(c.mean - bc.mean)
            assert dc.ci is not None and dc.ci.paired and dc.ci.low <= dc.mean <= dc.ci.high
    assert len([r for r in boosted if r.encoder]) == (3 if layout.x else len(available))
    assert present(df) == [key]           # the report shows this ablation by default, and no other


def test_rows_are_found_by_their_tags(frame):
    df, records = frame
    df = df[~df["encoder"].str.contains("/n8/|/n32/")]
    t7 = build_ablation(df, ABLATIONS["table7"], REGISTERED)
    by = {r.label: r.encoder for r in t7.rows if r.kind == "boosted"}
    assert by == {"Reverse, single-view": "boosted:/ws/boost/reverse/boosted",
                  "Random, single-view": "boosted:/ws/boost/random/boosted",
                  "Forward, single-view": "boosted:/ws/boost/full/boosted",
                  "Forward, multi-view": "boosted:/ws/boost/mv/boosted",
                  # all four SV+MV mixes match Table 7's row: one row each, named by their boost
                  **{k: v for k, v in by.items() if k.startswith("Forward, single + multi-view")}}
    assert len([k for k in by if k.startswith("Forward, single + multi-view")]) == 4
    t16 = build_ablation(df, ABLATIONS["table16"], REGISTERED)
    assert [r.encoder.split("/")[3] for r in t16.rows if r.kind == "boosted"] == ["sv11mv5", "sv12mv12", "sv8mv8",
                                                                                    "sv5mv11"]  # 1:1 twice
    t19 = build_ablation(df, ABLATIONS["table19"], REGISTERED)
    assert [r.encoder.split("/")[3] for r in t19.rows if r.kind == "boosted"] == ["vfm", "full"]
    assert mix_ratio("1:16,2:8") == "2:1" and mix_ratio("1:8,2:8") == "1:1"
    assert mix_ratio("1:11,2:5") == "2:1" and mix_ratio("1:5,2:11") == "1:2"     # within 3 % of 2/3, 1/3
    assert mix_ratio("1:7,2:9") == "7:9"                                         # no near simple ratio: exact


def test_a_delta_and_its_ci_against_an_independent_bootstrap():
    """Lin. RMSE: the variant is better by 0.05 on every image up to noise; the paired CI (results/stats) must
    agree with a plain numpy percentile bootstrap of the per-image differences."""
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 0.3, N)
    var = base - 0.05 + rng.normal(0, 0.04, N)
    enc = "boosted:/ws/boost/lora/boosted"
    rows = []
    for rid, e, v in (("a", BASE, base), ("b", enc, var)):
        row = {c: "" for c in COLUMNS}
        row.update({"run_id": rid, "encoder": e, "boosted_from": "" if e == BASE else BASE, "suite": "depth.nyud",
                    "dataset": "d", "head": "linear", "mode": "fast", "metric": "lin.rmse", "value": float(v.mean()),
                    "direction": "min", "primary": True, "seed": 0, "config_hash": rid, "start_time": 0,
                    "run_std": float("nan"), "boost_samples": float("nan")})
        if e != BASE:
            row.update({**FULL, "boost_variant": "lora"})
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    store = FakeStore({("a", "lin.rmse"): PerSample(IDS, base), ("b", "lin.rmse"): PerSample(IDS, var)})
    t = build_ablation(df, ABLATIONS["table17"], REGISTERED, store, resamples=4000)
    i = next(i for i, r in enumerate(t.rows) if r.encoder == enc and r.kind == "boosted")
    d = t.rows[i + 1].cells[[c.suite for c in ABLATIONS["table17"].columns].index("depth.nyud")]
    diff = var - base
    assert d.mean == pytest.approx(diff.mean(), abs=1e-12)
    boot = np.array([diff[rng.integers(0, N, N)].mean() for _ in range(4000)])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert d.ci.low == pytest.approx(lo, abs=0.003) and d.ci.high == pytest.approx(hi, abs=0.003)
    assert d.ci.high < 0 and d.best                        # lower RMSE: better, significant
    assert t.rows[i].cells[2].best                         # the variant's value is the bold one
    # the columns without runs say so; rows without a boost say so
    assert any("no finished cls.imagenet run" in n for n in t.notes)
    empty = [r for r in t.rows if r.kind == "boosted" and not r.encoder]
    assert {r.label for r in empty} == {"Full fine-tuning", "Dual-channel attention"}


def test_report_builds_ablation_tables_and_the_table18_plot(tmp_path):
    """Real MLflow runs (per-sample artifacts) -> spatialboost report: the varied tables appear by default,
    Table 18 as a log-x plot, each cell's run ids in the Markdown details."""
    from harness.tracking import Tracker
    from reports.build import build_report
    from signal_fixtures import log_run, samples
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t = Tracker(uri, "abl", tmp_path / "artifacts")
    rng = np.random.default_rng(2)
    err = rng.gamma(2.0, 0.3, N)
    D = {"lin.rmse": "min"}
    log_run(t, BASE, "depth.nyud", "linear", "lin.rmse", D, {"lin.rmse": samples(IDS, err)})
    ids = {}
    for n, shift in ((8, -0.01), (16, -0.03), (32, -0.06)):
        enc = f"boosted:/ws/boost/n{n}/boosted"
        tags = {"boosted_from": BASE, "boost.variant": "dual", "boost.lm_random": "0", "boost.run_id": f"run{n:04d}",
                "boost.data.levels": "pix,obj,scene", "boost.data.order": "forward", "boost.data.views": "1",
                "boost.data.samples": str(n), "boost.data.source": "gt", "boost.samples": f"1:4,2:4,3:{n}"}
        ids[n] = log_run(t, enc, "depth.nyud", "linear", "lin.rmse", D,
                         {"lin.rmse": samples(IDS, err + shift + rng.normal(0, 0.01, N))}, tags=tags)
    paths = build_report(uri, "abl", tmp_path / "out", resamples=500)
    assert "table18" in paths.tables and "table7" not in paths.tables     # only what the runs vary
    md = paths["md"].read_text()
    assert "Table 18: Data scalability" in md and "| 32 samples |" in md
    for rid in ids.values():
        assert rid in md                                                  # every cell traceable
    assert paths.plots["table18"].stat().st_size > 1000
    html = paths["html"].read_text()
    assert "Table 18: Data scalability (stage-3 samples) (Δ vs base" in html
    with pytest.raises(ValueError, match="table19 \\(ablations\\)|ablations"):
        build_report(uri, "abl", tmp_path / "out", tables=["table99"])


def test_table18_plot_has_one_panel_per_filled_column(frame):
    """A campaign that evaluates depth only gets one panel (no empty Cls / Seg axes); all columns: three."""
    from reports.plots import ablation_curve
    df, records = frame
    keep = {BASE} | {f"boosted:/ws/boost/{n}/boosted" for n in CAMPAIGN["table18"]}
    df = df[df["encoder"].isin(keep)]
    layout = ABLATIONS["table18"]
    full = ablation_curve(build_ablation(df, layout, REGISTERED, FakeStore(records), resamples=100))
    depth = ablation_curve(build_ablation(df[df["suite"] == "depth.nyud"], layout, REGISTERED,
                                          FakeStore(records), resamples=100))
    assert len(full.axes) == 3 and len(depth.axes) == 1
    assert depth.axes[0].get_title().startswith("Depth")
    assert len(depth.axes[0].lines[0].get_xdata()) == 3          # 8 / 16 / 32 samples
