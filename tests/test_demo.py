"""`spatialboost demo --preset tiny` end to end, as a user runs it: world -> QA -> boost -> suites -> report."""
import subprocess
import sys
from pathlib import Path

import mlflow

from harness.registry import SUITES

BIN = Path(sys.executable).parent / "spatialboost"
NO_EMBEDDED_DATA = {"retrieval.met", "retrieval.amstertime", "cortexbench.dmc", "cortexbench.adroit",
                    "cortexbench.trifinger"}


def test_tiny_demo_end_to_end_and_rerun_reuses(tmp_path):
    ws = tmp_path / "ws"
    first = subprocess.run([str(BIN), "demo", "--preset", "tiny", "--workspace", str(ws)], capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "boosted candidate: boosted:" in first.stdout
    report = ws / "reports" / "demo-tiny.md"
    assert report.is_file() and (ws / "reports" / "demo-tiny.html").is_file()
    text = report.read_text()
    assert "+SpatialBoost tiny-vit (boost " in text and "(random LM)" in text   # tiny preset: random LM
    assert "## Signal check" in text and "random-init" in text and "floor" in text

    client = mlflow.MlflowClient(f"sqlite:///{ws}/mlflow.db")
    exp = client.get_experiment_by_name("demo-tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    by_suite = {}
    reports = [r for r in runs if r.data.tags.get("kind") == "report"]
    assert len(reports) == 1                                         # the report itself, browsable in MLflow
    assert {a.path for a in client.list_artifacts(reports[0].info.run_id)} >= {"report.md", "report.html"}
    for r in runs:
        if r.data.tags.get("kind") == "report":
            continue
        by_suite.setdefault(r.data.tags["suite"], set()).add(r.data.tags["encoder"])
    expected = {n for n in SUITES.names() if SUITES.get(n).embedded_default} - NO_EMBEDDED_DATA
    assert not {"vqa.gqa", "vqa.lmms"} & expected                    # real benchmarks: listed as skipped
    assert set(by_suite) == expected
    for suite, encoders in by_suite.items():
        assert len(encoders) == 3, f"{suite}: {encoders}"          # baseline, random-init reference, boosted
        assert any(e.startswith("boosted:") for e in encoders)
        assert "random:builtin:tiny-vit" in encoders

    again = subprocess.run([str(BIN), "demo", "--preset", "tiny", "--workspace", str(ws)], capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [l for l in again.stdout.splitlines() if l.startswith("[demo") and "=" in l]
    assert lines and all("(reused)" in l for l in lines), lines


def test_the_default_preset_says_why_each_left_out_suite_is_left_out():
    """Every registered suite is in the default preset or named in its report notes with a reason: the
    preset's own, 'real benchmark data only' (no embedded default), or the time budget."""
    from harness.commands.demo import PRESETS, left_out_notes
    from harness.registry import SUITES
    p = PRESETS["default"]
    notes = left_out_notes(p, "default")
    named = [n for note in notes for n in note.split(": ", 1)[0].split(", ")]   # "a, b: why"
    assert sorted(named + list(p.suites)) == sorted(SUITES.names())
    assert any(n.startswith("lexicon3d.scanqa: not in the `default` preset: no encoder separates") for n in notes)
    real_only = next(n for n in notes if "real benchmark data only" in n)
    assert "vqa.mme" in real_only and "vqa.blink_depth_local" not in real_only
    # scanrefer reads semantic's lifted features: it must come after it in the preset
    assert p.suites.index("lexicon3d.semantic") < p.suites.index("lexicon3d.scanrefer")
    assert p.suites.index("lexicon3d.semantic") < p.suites.index("lexicon3d.registration")
