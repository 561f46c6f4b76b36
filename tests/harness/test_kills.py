"""kill -9 (and SIGTERM) at the worst moments (feature extraction, world generation, sweep, boost, ui), then rerun: no temp folder, no orphan process and no RUNNING
run survives (issue #14). Also: two identical commands at once record one run; a dead process's run is
marked KILLED with an ``error`` tag; ``spatialboost ui`` forwards SIGTERM to its server.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from fixtures import make_imagefolder

BIN = Path(sys.executable).parent / "spatialboost"


def _env(ws: Path, **extra) -> dict:
    env = {**os.environ, "SPATIALBOOST_HOME": str(ws), "MLFLOW_TRACKING_URI": "", **extra}
    env.pop("MLFLOW_TRACKING_URI")
    return env


def _runs(ws: Path, experiment: str | None = None) -> list:
    import mlflow
    db = ws / "mlflow.db"
    if not db.exists():
        return []
    from harness.tracking import store_init_lock
    uri = f"sqlite:///{db}"
    with store_init_lock(uri):      # the sweep may be creating the store's tables right now
        client = mlflow.MlflowClient(tracking_uri=uri)
        ids = [e.experiment_id for e in client.search_experiments()
               if experiment is None or e.name == experiment]
        return client.search_runs(ids, max_results=10000) if ids else []


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``pid`` (from /proc)."""
    from harness.tracking import _proc_start
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append((c, _proc_start(c)))
            todo.append(c)
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait_gone(procs: list[tuple[int, str]], timeout: float = 15.0) -> list[int]:
    from harness.tracking import pid_alive
    deadline = time.time() + timeout
    alive = procs
    while time.time() < deadline:
        alive = [(p, s) for p, s in procs if pid_alive(p, s)]
        if not alive:
            return []
        time.sleep(0.2)
    return [p for p, _ in alive]


def _assert_clean(ws: Path) -> None:
    tmps = list((ws / "cache").glob("*.tmp-*")) if (ws / "cache").is_dir() else []
    tmps += list((ws / "data").glob("world-*/scenes/.tmp-*")) if (ws / "data").is_dir() else []
    assert not tmps, f"temp folders survived: {tmps}"
    running = [r.info.run_id for r in _runs(ws) if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"
    for r in _runs(ws):
        if r.info.status in ("FAILED", "KILLED") and r.data.tags.get("pruned") != "1":
            assert r.data.tags.get("error"), f"{r.info.status} run {r.info.run_id} has no error tag"


@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    """Enough images that feature extraction with batch size 2 lasts a few seconds."""
    return make_imagefolder(tmp_path_factory.mktemp("kills") / "imf", n_classes=2, train_per_class=300,
                            val_per_class=20, size=32)


# ------------------------------------------------------------------------------------ kill -9 in extraction
@pytest.mark.slow   # 183 s at load 25 on 2 cores (~40 s of CPU)
def test_kill_9_during_feature_extraction_then_rerun(tmp_path, big_data):
    ws = tmp_path / "ws"
    cmd = [str(BIN), "eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data", str(big_data),
           "--no-progress", "batch_size=2", "protocol.epochs=1", "protocol.lrs=[0.1]", "protocol.knn_k=[1]"]
    proc = subprocess.Popen(cmd, env=_env(ws), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    tmp = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and tmp is None:
        found = list((ws / "cache").glob("*.tmp-*")) if (ws / "cache").is_dir() else []
        tmp = found[0] if found else None
        time.sleep(0.05)
    assert tmp is not None, "extraction finished (or failed) before it could be killed"
    group = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert tmp.exists(), "the kill left no temp folder: nothing was tested"
    assert [r.info.status for r in _runs(ws)] == ["RUNNING"], "the killed run should still look RUNNING"
    assert not _wait_gone(group), "processes of the killed command survived"

    again = subprocess.run(cmd, env=_env(ws), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    _assert_clean(ws)
    by_status = sorted(r.info.status for r in _runs(ws))
    assert by_status == ["FINISHED", "KILLED"], by_status
    killed = [r for r in _runs(ws) if r.info.status == "KILLED"][0]
    assert str(killed.data.tags["process.pid"]) in killed.data.tags["error"]


# ----------------------------------------------------------------------------- kill -9 in world generation
@pytest.mark.slow   # 66 s at load 25 on 2 cores
def test_world_workers_die_with_their_parent_and_rerun_completes(tmp_path):
    """kill -9 of the command only (not its group): the render workers must not live on."""
    ws = tmp_path / "ws"
    cmd = [str(BIN), "eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--no-progress",
           "protocol.epochs=1", "protocol.lrs=[0.1]", "protocol.knn_k=[1]", "protocol.n_last_blocks=[1]"]
    env = _env(ws, SPATIALBOOST_WORLD_PRESET="tiny")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    workers: list = []
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        kids = [(p, s) for p, s in _descendants(proc.pid) if b"spawn_main" in _cmdline(p)]
        scenes = ws / "data" / "world-tiny" / "scenes"
        if len(kids) >= 2 and scenes.is_dir():
            workers = kids
            break
        time.sleep(0.1)
    assert workers, "world generation finished (or failed) before its workers could be seen"
    everything = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    survivors = _wait_gone(everything, timeout=15)
    if survivors:
        for p in survivors:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not survivors, f"render workers outlived their parent: {survivors}"
    manifest = yaml.safe_load((ws / "data" / "world-tiny" / "world.json").read_text())
    assert not manifest.get("complete"), "the world was complete before the kill: nothing was tested"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    _assert_clean(ws)
    manifest = yaml.safe_load((ws / "data" / "world-tiny" / "world.json").read_text())
    assert manifest.get("complete")
    assert [r.info.status for r in _runs(ws)] == ["FINISHED"]


# ------------------------------------------------------------------------------------ kill -9 in a sweep
@pytest.mark.slow   # 102 s at load 25 on 2 cores
def test_kill_9_during_sweep_then_resume_logs_results(tmp_path):
    data = make_imagefolder(tmp_path / "imf", n_classes=3, train_per_class=60, size=32)
    ws = tmp_path / "ws"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({
        "encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data), "head": "linear",
        # 200 epochs: each trial stays RUNNING for ~2 s (at 2 epochs a cached trial took 0.2 s and the poll
        # below could miss all three: the sweep finished before the kill, once in CI)
        "workspace": str(ws), "protocol": {"epochs": 200, "lrs": [0.01, 0.1]},
        "sweep": {"space": {"holdout_fraction": [0.1, 0.2, 0.3]}, "heartbeat_seconds": 1, "grace_seconds": 3}}))
    import optuna
    storage = f"sqlite:///{ws}/optuna.db"
    log = tmp_path / "sweep.log"
    killed, last_error, seen = False, None, []
    deadline = time.time() + 300
    with log.open("w") as out:      # the sweep's output, the poll's last error and the statuses it saw go into
        proc = subprocess.Popen([str(BIN), "sweep", str(cfg)], env=_env(ws), start_new_session=True,  # the failure
                                stdout=out, stderr=subprocess.STDOUT)
        while time.time() < deadline and proc.poll() is None and not killed:
            time.sleep(0.1)
            try:
                runs = _runs(ws)
            except Exception as e:  # noqa: BLE001 - the store is being created
                last_error = repr(e)
                continue
            seen = sorted({r.info.status for r in runs})
            if any(r.info.status == "RUNNING" and "mlflow.parentRunId" in r.data.tags for r in runs):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
        proc.wait(timeout=30)
    assert killed, (f"the sweep ended (rc {proc.returncode}) before a trial could be killed; run statuses seen "
                    f"{seen}, last poll error {last_error}; sweep output:\n{log.read_text()[-3000:]}")
    time.sleep(4)   # past grace_seconds: the killed trial is stale
    again = subprocess.run([str(BIN), "sweep", str(cfg)], env=_env(ws), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    lines = [ln for ln in again.stdout.splitlines() if ln.startswith("[sweep] trial")]
    assert any(" COMPLETE " in ln for ln in lines), again.stdout
    assert not any(" WAITING " in ln or "{}" in ln for ln in lines), again.stdout      # issue #14's log line
    assert all("=-" not in ln for ln in lines if " COMPLETE " in ln), again.stdout
    names = optuna.study.get_all_study_names(storage)
    done = [t.params for t in optuna.load_study(study_name=names[0], storage=storage).get_trials()
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(p["protocol.holdout_fraction"] for p in done) == [0.1, 0.2, 0.3]
    _assert_clean(ws)
    statuses = sorted(r.info.status for r in _runs(ws))
    assert statuses.count("KILLED") >= 1 and "RUNNING" not in statuses, statuses


# ----------------------------------------------------------------------------- two identical commands at once
@pytest.mark.slow   # 75 s at load 25 on 2 cores
def test_two_identical_commands_record_one_run(tmp_path):
    data = make_imagefolder(tmp_path / "imf", n_classes=2, train_per_class=8, val_per_class=3, size=32)
    ws = tmp_path / "ws"
    cmd = [str(BIN), "eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data", str(data),
           "--no-progress", "protocol.epochs=1", "protocol.lrs=[0.1]"]
    procs = [subprocess.Popen(cmd, env=_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = _runs(ws)
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.run_id, r.info.status) for r in runs]
    assert sum("reused finished run" in o for o, _ in outs) == 1, outs


# -------------------------------------------------------------------------------- reaper and temp cleanup
def _dead_pid() -> tuple[int, str]:
    from harness.tracking import _proc_start
    p = subprocess.Popen(["sleep", "30"])
    start = _proc_start(p.pid)
    p.kill()
    p.wait()
    return p.pid, start


def test_run_of_a_dead_process_is_marked_killed_at_the_next_command(tmp_path):
    import platform

    from harness.tracking import Tracker, process_tags
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = Tracker(uri, "exp", tmp_path / "artifacts")
    pid, start = _dead_pid()
    dead = t.client.create_run(t.experiment_id, tags={"process.host": platform.node(), "process.pid": str(pid),
                                                      "process.start": start}).info.run_id
    alive = t.client.create_run(t.experiment_id, tags=process_tags()).info.run_id
    remote_old = t.client.create_run(t.experiment_id, tags={"process.host": "elsewhere", "process.pid": "1",
                                                           "heartbeat": str(int(time.time()) - 3600)}).info.run_id
    remote_new = t.client.create_run(t.experiment_id, tags={"process.host": "elsewhere", "process.pid": "1",
                                                           "heartbeat": str(int(time.time()))}).info.run_id
    t2 = Tracker(uri, "exp", tmp_path / "artifacts")
    assert sorted(t2.reaped) == sorted([dead, remote_old])
    c = t2.client
    assert c.get_run(dead).info.status == "KILLED" and str(pid) in c.get_run(dead).data.tags["error"]
    assert c.get_run(remote_old).info.status == "KILLED" and "heartbeat" in c.get_run(remote_old).data.tags["error"]
    assert c.get_run(alive).info.status == "RUNNING" and c.get_run(remote_new).info.status == "RUNNING"


def test_failed_run_gets_an_error_tag(tmp_path):
    from harness.tracking import Tracker
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    with pytest.raises(ValueError):
        with t.start("x", {}, {}, {}):
            raise ValueError("image 'a.png' is 8-bit")
    run = t.client.search_runs([t.experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["error"] == "ValueError: image 'a.png' is 8-bit"


def test_stale_cache_temp_folders_of_dead_processes_are_removed(tmp_path):
    import platform

    from harness.cache import FeatureCache
    pid, _ = _dead_pid()
    root = tmp_path / "cache"
    dead = [root / f"abc.tmp-{pid}@{platform.node()}", root / f"abd.tmp-{pid}"]   # the second: old naming
    live = root / f"abe.tmp-{os.getpid()}@{platform.node()}"
    other_host = root / f"abf.tmp-{pid}@some-other-host"
    for d in [*dead, live, other_host]:
        (d / "x").mkdir(parents=True)
    cache = FeatureCache(root)
    assert sorted(cache.removed_stale) == sorted(dead)
    assert not any(d.exists() for d in dead) and live.exists() and other_host.exists()


# ------------------------------------------------------------------------------------------------- ui
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # 90 s at load 25 (mlflow ui's start dominates)
def test_sigterm_to_ui_stops_the_server_and_its_workers(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([str(BIN), "ui", "--port", str(port), "--workspace", str(tmp_path)],
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline and proc.poll() is None and status is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(1)
        assert status == 200, "the UI did not answer"
        children = _descendants(proc.pid)
        assert children, "mlflow ui should run as a child process"
        proc.send_signal(signal.SIGTERM)          # to the spatialboost process only, as a service manager
        proc.wait(timeout=60)
        assert not _wait_gone(children, timeout=20), "mlflow ui / uvicorn outlived SIGTERM"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts connections"
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------ kill -9 in boost
@pytest.mark.slow   # 74 s at load ~20 on 2 cores
def test_kill_9_during_boost_then_rerun(tmp_path):
    """kill -9 mid stage 3 of a tracked boost: the next command marks its runs KILLED; the rerun resumes
    them to FINISHED; no RUNNING run, no orphan process."""
    from trainer.conftest import make_dataset
    qa = make_dataset(tmp_path / "qa")
    ws = tmp_path / "ws"
    cmd = [str(BIN), "boost", "--encoder", "builtin:tiny-vit", "--lm", "builtin:tiny-qwen2", "--data", str(qa),
           "--stages", "2,3", "--workspace", str(ws), "--no-progress", "max_length=512",
           "stage2.batch_size=4", "stage2.micro_batch_size=2", "stage2.max_steps=2", "stage3.batch_size=4",
           "stage3.micro_batch_size=2", "stage3.max_steps=7", "checkpoint_every=2", "throttle_s=0.25"]
    env = _env(ws, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None and not killed:
        if any(ws.glob("boost/*/stage3/ckpt-*")):
            group = _descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed, "boost finished (or failed) before it could be killed"
    assert not _wait_gone(group), "processes of the killed boost survived"
    assert "RUNNING" in [r.info.status for r in _runs(ws)], "the kill left no RUNNING run: nothing was tested"

    from harness.tracking import Tracker
    reaper = Tracker(f"sqlite:///{ws / 'mlflow.db'}", "spatialboost-boost", ws / "artifacts")
    assert reaper.reaped, "the next command did not mark the killed boost's runs"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1].startswith("boosted:")
    _assert_clean(ws)
    runs = _runs(ws)
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
