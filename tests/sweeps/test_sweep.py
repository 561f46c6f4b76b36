"""Sweeps: grid points run once, a kill -9 loses nothing, two workers on PostgreSQL never duplicate."""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from fixtures import make_imagefolder
from harness.config import ConfigError, build
from harness.runner import EvalConfig
from harness.commands.sweep import SweepSpec, parse_space, run_sweep

BIN = Path(sys.executable).parent / "spatialboost"
POINTS = [0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("sweep") / "data", n_classes=3, train_per_class=10)


def _config(tmp_path, data, ws, epochs=2, **sweep):
    cfg = {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data), "head": "linear",
           "workspace": str(ws), "protocol": {"epochs": epochs, "lrs": [0.01, 0.1]},
           "sweep": {"space": {"holdout_fraction": POINTS}, "heartbeat_seconds": 1, "grace_seconds": 3, **sweep}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trials(storage, study=None):
    names = optuna.study.get_all_study_names(storage) if study is None else [study]
    assert len(names) == 1
    return optuna.load_study(study_name=names[0], storage=storage).get_trials()


def _check_each_point_completed_once(trials):
    done = [t.params["protocol.holdout_fraction"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(done) == POINTS, f"completed points {done}"


def test_grid_runs_every_point_once_and_rerun_is_a_no_op(tmp_path, data):
    ws = tmp_path / "ws"
    base = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data),
                              "head": "linear", "workspace": str(ws), "progress": False,
                              "protocol": {"epochs": 2, "lrs": [0.01, 0.1]}})
    spec = build(SweepSpec, {"space": {"holdout_fraction": POINTS}})
    res = run_sweep(base, spec, log=lambda *_: None)
    assert res.completed == 3 and res.duplicates == 0
    storage = f"sqlite:///{ws}/optuna.db"
    _check_each_point_completed_once(_trials(storage))
    again = run_sweep(base, spec, log=lambda *_: None)
    assert len(_trials(storage)) == 3 and again.best_run_id == res.best_run_id
    client = mlflow.MlflowClient(f"sqlite:///{ws}/mlflow.db")
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["selection_rule"] == "best lin.holdout_top1 (validation)"
    assert parent.data.metrics["best.lin.holdout_top1"] == res.best_value
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)


def test_sweep_survives_kill_9(tmp_path, data):
    ws = tmp_path / "ws"
    # 200 epochs keep each trial RUNNING ~2 s on cached features (at 2 epochs ~0.2 s: CI once saw all the trials
    # finish between two 0.3 s polls, so there was nothing left to kill)
    cfg = _config(tmp_path, data, ws, epochs=200)
    storage = f"sqlite:///{ws}/optuna.db"
    killed_number = None
    deadline = time.time() + 240
    while killed_number is None and time.time() < deadline:
        proc = subprocess.Popen([str(BIN), "sweep", str(cfg)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        candidate = None
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                trials = _trials(storage)
            except Exception:  # noqa: BLE001 - study not created yet
                continue
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.number >= 1]
            if running:
                candidate = running[0].number
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
        if candidate is None:
            break
        # a trial can finish between the poll and the signal (a ~1 s trial): then nothing was killed
        # mid-trial, and the sweep is started again to kill the next one
        if _trials(storage)[candidate].state == optuna.trial.TrialState.RUNNING:
            killed_number = candidate
    assert killed_number is not None, "the sweep finished before it could be killed"
    subprocess.run([str(BIN), "sweep", str(cfg)], check=True, timeout=400, capture_output=True)
    trials = _trials(storage)
    _check_each_point_completed_once(trials)
    killed = trials[killed_number]
    assert killed.state == optuna.trial.TrialState.FAIL     # marked stale, then retried with the same point
    retried = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
               and t.params == killed.params]
    assert len(retried) == 1


def _start_postgres(tmp_path):
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bindir:
        pytest.fail("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    bindir = bindir[-1]
    import tempfile
    data_dir = Path(tempfile.mkdtemp(prefix="sb-pg-"))  # outside pytest's 0700 tree: postgres must enter it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_user = [] if getpass.getuser() != "root" else ["runuser", "-u", "postgres", "--"]
    if as_user:
        shutil.chown(data_dir, "postgres")
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data_dir), "-U", "optuna", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "log"), "-w",
                    "-o", f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna", "sweeps"],
                   check=True, capture_output=True)
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"]
    return f"postgresql://optuna@127.0.0.1:{port}/sweeps", stop, data_dir


def test_two_workers_on_postgresql_finish_one_study_without_duplicates(tmp_path, data):
    url, stop, pg_dir = _start_postgres(tmp_path)
    try:
        ws = tmp_path / "ws"
        cfg = _config(tmp_path, data, ws, storage=url, study="pg-grid")
        workers = [subprocess.Popen([str(BIN), "sweep", str(cfg)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT) for _ in range(2)]
        outs = [w.communicate(timeout=400)[0].decode() for w in workers]
        assert all(w.returncode == 0 for w in workers), [o[-3000:] for o in outs]
        trials = _trials(url, "pg-grid")
        _check_each_point_completed_once(trials)
        assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


@pytest.mark.parametrize("space, message", [
    ({"lr": {"low": 0.1, "high": 0.1}}, "empty range"),
    ({"lr": []}, "has no values"),
    ({"lr": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
])
def test_bad_search_space(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(space)


def test_unreachable_storage(tmp_path, data):
    base = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data),
                              "workspace": str(tmp_path / "ws")})
    spec = build(SweepSpec, {"space": {"holdout_fraction": [0.1]},
                             "storage": "postgresql://nobody@127.0.0.1:9/none"})
    with pytest.raises(ConfigError, match="unreachable or invalid"):
        run_sweep(base, spec)


def test_suite_space_forms_are_parsed():
    dims = {d.key: d for d in parse_space({"holdout_fraction": ("grid", [0.1, 0.2]), "lr": ("float", 1e-4, 1e-1, True),
                                           "protocol.epochs": {"type": "int", "low": 1, "high": 5}})}
    assert dims["protocol.holdout_fraction"].values == (0.1, 0.2)
    assert dims["protocol.lr"].values is None and dims["protocol.lr"].log and dims["protocol.lr"].high == 0.1
    assert dims["protocol.epochs"].integer


def test_intermediate_values_prune_tpe_trials(tmp_path, data):
    """The classification suite reports held-out top-1 after each epoch; a pruner stops trials early."""
    ws = tmp_path / "ws"
    base = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data),
                              "head": "linear", "workspace": str(ws), "progress": False,
                              "protocol": {"epochs": 3, "lrs": [0.01, 0.1]}})
    spec = build(SweepSpec, {"space": {"holdout_fraction": {"low": 0.1, "high": 0.3}}, "sampler": "tpe",
                             "n_trials": 2, "pruner": "threshold:101"})   # top-1 <= 100: pruned at epoch 1
    with pytest.raises(RuntimeError, match="no completed trial"):
        run_sweep(base, spec, log=lambda *_: None)
    trials = _trials(f"sqlite:///{ws}/optuna.db")
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    assert all(list(t.intermediate_values) == [1] for t in trials)
    client = mlflow.MlflowClient(f"sqlite:///{ws}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("spatialboost").experiment_id],
                              filter_string="tags.pruned = '1'")
    assert len(runs) == 2 and all(r.info.status == "KILLED" for r in runs)
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "intermediate.validation")]
    with pytest.raises(ConfigError, match="not one of median"):
        run_sweep(base, build(SweepSpec, {"space": {"holdout_fraction": {"low": 0.1, "high": 0.3}},
                                          "pruner": "hyperband"}))
