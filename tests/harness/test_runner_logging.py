"""What the runner records in MLflow for one evaluation, on a toy suite: figures, the dataset input, system
metrics of a long run, and the explicit workspace a suite receives."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from harness.config import build, field
from harness.registry import SUITES
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec

SEEN: dict = {}


@dataclass(frozen=True)
class ToyOptions:
    sleep: float = field(0.0, help="seconds the run takes", min=0)


class ToySuite(Suite):
    spec = SuiteSpec(name="toy.logging", version="1", task="toy", heads=("linear",),
                     metrics=(MetricSpec("score", "max"),), primary="score")
    Options = ToyOptions

    def dataset_fingerprint(self, data: Path) -> str:
        return "toy-" + str(len(list(Path(data).iterdir())))

    def run(self, ctx: RunContext) -> SuiteResult:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        SEEN["workspace"] = ctx.workspace
        time.sleep(self.options.sleep)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.bar([0, 1], [1, 2])
        return SuiteResult({"score": 1.0}, figures={"bars": fig})


@pytest.fixture
def toy_data(tmp_path, monkeypatch):
    # registered for this test only: the suite contract test walks SUITES and must not meet the toy
    monkeypatch.setitem(SUITES._entries, "toy.logging", ToySuite)
    d = tmp_path / "toydata"
    d.mkdir()
    (d / "a.txt").write_text("x")
    return d


def _eval(workspace, toy_data, **protocol):
    from harness.runner import EvalConfig, evaluate
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "toy.logging", "data": str(toy_data),
                             "workspace": str(workspace), "world": "tiny", "experiment": "toy",
                             "progress": False, "protocol": protocol})
    return evaluate(cfg)


def test_figures_dataset_input_and_explicit_workspace(workspace, toy_data):
    rec = _eval(workspace, toy_data)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    arts = [a.path for a in client.list_artifacts(rec.run_id, "figures")]
    assert arts == ["figures/bars.png"]
    png = Path(client.download_artifacts(rec.run_id, "figures/bars.png", str(workspace)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = client.get_run(rec.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == "toy-1"
    assert str(toy_data) in inputs[0].dataset.source
    ws = SEEN["workspace"]
    assert ws.root == Path(workspace).resolve() and ws.world == "tiny"


def test_long_runs_log_system_metrics(workspace, toy_data, monkeypatch):
    import harness.tracking as tracking
    monkeypatch.setattr(tracking, "SYSTEM_METRICS_SECONDS", 0.2)
    rec = _eval(workspace, toy_data, sleep=1.5)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    keys = client.get_run(rec.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in keys), sorted(keys)
    assert any(k.startswith("system/system_memory_usage") for k in keys)


def test_precision_auto_is_resolved_before_the_run_is_hashed_and_tagged(workspace, toy_data, monkeypatch):
    """precision=auto records (and hashes) what the device computes natively: a run made with auto is the
    run an explicit request of that precision reuses, and its tag never says 'auto'."""
    import harness.runner as runner
    from harness.runner import EvalConfig, evaluate
    for native in ("bf16", "fp32"):
        monkeypatch.setattr(runner, "fast_precision", lambda device, native=native: native)
        base = {"encoder": "builtin:tiny-vit", "suite": "toy.logging", "data": str(toy_data),
                "workspace": str(workspace), "world": "tiny", "experiment": "toy", "progress": False}
        auto = evaluate(build(EvalConfig, {**base, "precision": "auto"}))
        assert auto.tags["precision"] == native and not auto.reused
        explicit = evaluate(build(EvalConfig, {**base, "precision": native}))
        assert explicit.reused and explicit.run_id == auto.run_id
