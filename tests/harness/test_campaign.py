"""Campaigns: expansion and validation, the local pool, Ray, submitit, and resuming after kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from harness.commands.campaign import CampaignSpec, expand, run_campaign
from harness.config import ConfigError, build

ROOT = Path(__file__).resolve().parents[2]
ENCODERS = ["builtin:tiny-vit", "random:builtin:tiny-vit"]


def _spec(ws: Path, **over) -> CampaignSpec:
    data = {"experiment": "camp", "world": "tiny", "preset": "tiny", "encoders": ENCODERS,
            "suites": {"retrieval.roxford": {}}, "seeds": [0], "workspace": str(ws),
            "eval": {"batch_size": 16}, "report": False, **over}
    return build(CampaignSpec, data)


def _finished(ws: Path, experiment: str = "camp", status: str = "FINISHED") -> list:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"attributes.status = '{status}'", max_results=1000)


def test_expand_validates_every_job_before_any_runs(workspace):
    spec = _spec(workspace, seeds=[0, 1, 2], devices=["cpu", "cpu"],
                 suites={"retrieval.roxford": {}, "cls.imagenet": {"head": "linear"}})
    jobs = expand(spec)
    assert len(jobs) == 2 * 2 * 3
    assert {(j.config["suite"], j.config["encoder"], j.config["seed"]) for j in jobs} == {
        (s, e, k) for s in ("retrieval.roxford", "cls.imagenet") for e in ENCODERS for k in (0, 1, 2)}
    cls_job = next(j for j in jobs if j.config["suite"] == "cls.imagenet")
    from harness.registry import SUITES
    assert cls_job.config["protocol"] == SUITES.get("cls.imagenet").demo_protocol("tiny")   # the preset's protocol
    assert cls_job.config["head"] == "linear" and cls_job.config["device"] == "cpu"
    with pytest.raises(ConfigError, match=r"job retrieval.roxford x builtin:tiny-vit x seed 0: .*protocol.no_such"):
        expand(_spec(workspace, suites={"retrieval.roxford": {"protocol": {"no_such": 1}}}))
    with pytest.raises(ConfigError, match="suites.retrieval.roxford: unknown key"):
        expand(_spec(workspace, suites={"retrieval.roxford": {"epochs": 3}}))
    from harness.registry import RegistryError
    with pytest.raises(RegistryError, match="retrieval.roxford"):
        expand(_spec(workspace, suites={"retrieval.roxfrod": {}}))


def test_local_pool_runs_each_job_once_and_a_rerun_reuses_them(workspace):
    spec = _spec(workspace, workers=2)
    res = run_campaign(spec, progress=False, log=lambda m: None)
    assert res.count("done") == 2 and res.count("failed") == 0
    runs = _finished(workspace)
    assert len(runs) == 2 and len({r.data.tags["config_hash"] for r in runs}) == 2
    again = run_campaign(spec, progress=False, log=lambda m: None)
    assert again.count("reused") == 2 and again.count("done") == 0
    assert {r["run_id"] for r in again.results.values()} == {r.info.run_id for r in runs}


def test_a_failing_job_is_reported_and_keeps_its_traceback(workspace):
    spec = _spec(workspace, encoders=["builtin:tiny-vit"],
                 suites={"retrieval.roxford": {"protocol": {"layer": 99}}})     # a block the ViT lacks
    res = run_campaign(spec, progress=False, log=lambda m: None)
    assert res.count("failed") == 1
    (failed,) = res.results.values()
    assert "99" in failed["error"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    exp = client.get_experiment_by_name("camp")
    (run,) = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert "99" in run.data.tags["error"]
    assert [a.path for a in client.list_artifacts(run.info.run_id) if a.path == "traceback.txt"]


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_campaign(workspace):
    spec = _spec(workspace, executor="slurm", slurm={"cluster": "local", "timeout_min": 10})
    res = run_campaign(spec, progress=False, log=lambda m: None)
    assert res.count("done") == 2, res.results
    assert len(_finished(workspace)) == 2


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_runs_six_jobs(workspace):
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        spec = _spec(workspace, executor="ray", seeds=[0, 1, 2], ray_address=cluster.address)
        res = run_campaign(spec, progress=False, log=lambda m: None)
        assert res.count("done") == 6, res.results
        assert len({r.data.tags["config_hash"] for r in _finished(workspace)}) == 6
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_completes_only_the_missing_jobs(workspace, tmp_path):
    spec = {"experiment": "camp", "world": "tiny", "preset": "tiny", "encoders": ENCODERS,
            "suites": {"retrieval.roxford": {}}, "seeds": [0, 1], "workspace": str(workspace),
            "eval": {"batch_size": 16}, "report": False, "workers": 1}
    f = tmp_path / "camp.yaml"
    f.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "harness.commands.cli", "campaign", str(f), "--no-progress"]
    env = {**os.environ, "SPATIALBOOST_HOME": str(workspace)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # kill while a later job is under way: one finished and another RUNNING (a fixed sleep raced: tiny jobs
    # take ~1 s, so all four could finish before the kill)
    while time.time() < deadline and not (_finished(workspace) and _finished(workspace, status="RUNNING")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r.info.run_id for r in _finished(workspace)}
    assert 1 <= len(before) < 4
    rc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rc.returncode == 0, rc.stderr[-2000:]
    after = _finished(workspace)
    assert len(after) == 4 and len({r.data.tags["config_hash"] for r in after}) == 4
    assert before <= {r.info.run_id for r in after}                 # finished work was reused, not redone
    assert f"{4 - len(before)} computed, {len(before)} reused" in rc.stdout
