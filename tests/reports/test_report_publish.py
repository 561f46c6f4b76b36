"""`spatialboost report` logs its files to one kind=report run; report runs never feed back into tables."""
import json

import numpy as np
import pytest

from harness.commands.cli import main
from harness.tracking import Tracker
from results.runs import load_runs
from signal_fixtures import BASE, BOOST, RANDOM, log_run, samples

D = {"rmse": "min", "lin.rmse": "min"}
IDS = [f"img{i:02d}" for i in range(30)]


def _depth_run(tracker, encoder, offset, seed=0, tags=None):
    rng = np.random.default_rng([seed, int(100 + offset * 100)])
    err = samples(IDS, 1.0 + offset + 0.1 * rng.random(len(IDS)))
    return log_run(tracker, encoder, "depth.nyud", "linear", "lin.rmse", D, {"lin.rmse": err}, seed=seed,
                   tags=tags)


@pytest.fixture
def experiment(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    tracker = Tracker(f"sqlite:///{ws / 'mlflow.db'}", "exp", ws / "artifacts")
    ids = [_depth_run(tracker, BASE, 0.0), _depth_run(tracker, RANDOM, 0.5, tags={"random_of": BASE}),
           _depth_run(tracker, BOOST, -0.1, tags={"boosted_from": BASE})]
    return ws, tracker, ids


def _report_runs(tracker):
    return tracker.client.search_runs([tracker.experiment_id], filter_string="tags.kind = 'report'",
                                      order_by=["attributes.start_time ASC"])


def _report(ws, capsys):
    assert main(["report", "--workspace", str(ws), "--experiment", "exp"]) == 0
    return capsys.readouterr().out


def test_report_run_holds_the_report_and_is_never_reported_on(experiment, capsys):
    ws, tracker, ids = experiment
    out = _report(ws, capsys)
    runs = _report_runs(tracker)
    assert len(runs) == 1
    rep = runs[0]
    assert f"mlflow report run {rep.info.run_id}" in out
    assert rep.info.status == "FINISHED" and rep.data.tags["source_run_ids"] == ",".join(sorted(ids))
    assert rep.data.params["experiment"] == "exp" and "table1" in rep.data.params["tables"].split(",")
    arts = {f.path for f in tracker.client.list_artifacts(rep.info.run_id)}
    assert {"report.md", "report.html", "report.tex", "report.json", "plots"} <= arts
    plots = {f.path for f in tracker.client.list_artifacts(rep.info.run_id, "plots")}
    assert plots == {"plots/primary.png"}
    local_md = (ws / "reports" / "exp.md").read_text()
    with open(tracker.client.download_artifacts(rep.info.run_id, "report.md")) as f:
        assert f.read() == local_md
    assert (ws / "reports" / "exp-plots" / "primary.png").read_bytes()[:4] == b"\x89PNG"
    with open(tracker.client.download_artifacts(rep.info.run_id, "report.json")) as f:
        assert json.load(f)["source_run_ids"] == sorted(ids)
    assert "3 finished runs" in local_md

    # the report run is in the experiment, but not in the results frame or the next report
    assert set(load_runs(tracker.uri, "exp")["run_id"]) == set(ids)
    ids.append(_depth_run(tracker, BASE, 0.02, seed=1))          # a new evaluation changes the report
    _report(ws, capsys)
    runs = _report_runs(tracker)
    assert len(runs) == 2
    assert runs[1].data.tags["source_run_ids"] == ",".join(sorted(ids))
    assert runs[0].info.run_id not in runs[1].data.tags["source_run_ids"]
    assert "4 finished runs" in (ws / "reports" / "exp.md").read_text()

    _report(ws, capsys)                                             # identical rebuild: the same report run
    assert [r.info.run_id for r in _report_runs(tracker)] == [r.info.run_id for r in runs]


def test_results_frame_drops_report_runs_even_with_suite_tags(experiment):
    ws, tracker, ids = experiment
    _depth_run(tracker, BASE, 3.0, seed=5, tags={"kind": "report"})
    assert set(load_runs(tracker.uri, "exp")["run_id"]) == set(ids)
