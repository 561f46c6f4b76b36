"""Kill -9 + resume continues the same loss curve; 2-process DDP (gloo) ends with identical weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import config_hash, build
from encoders.spatialboost.trainer import BoostConfig

ROOT = Path(__file__).resolve().parents[2]


def _args(data, ws, extra=()):
    return ["boost", "--encoder", "builtin:tiny-vit", "--data", str(data), "--stages", "2,3", "--workspace", str(ws),
            "--no-progress", "tracking=false", "max_length=512", "stage2.batch_size=4", "stage2.micro_batch_size=2",
            "stage2.max_steps=2", "stage3.batch_size=4", "stage3.micro_batch_size=2", "stage3.max_steps=7",
            "stage3.lr=1e-3", "checkpoint_every=2", *extra]


def _env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run_dir(ws, data, extra=()):
    from encoders.spatialboost.cli import boost_config
    import argparse
    from encoders.spatialboost.cli import add_boost_parser
    p = argparse.ArgumentParser()
    add_boost_parser(p.add_subparsers())
    cfg = boost_config(p.parse_args(_args(data, ws, extra)))
    return Path(ws) / "boost" / config_hash(cfg)


def _losses(run_dir, stage):
    ck = sorted((run_dir / f"stage{stage}").glob("ckpt-*"))[-1]
    st = json.loads((ck / "state.json").read_text())
    assert st["done"]
    return st["losses"]


def test_kill_and_resume_continues_the_same_loss_curve(qa_file, tmp_path):
    cmd = [sys.executable, "-m", "encoders.spatialboost.cli"]
    # uninterrupted reference, in this process (saves an interpreter start), single-threaded like the children
    import torch
    from encoders.spatialboost.cli import main
    ref_ws = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(qa_file, ref_ws)) == 0
    finally:
        torch.set_num_threads(threads)
    ref_dir = _run_dir(ref_ws, qa_file)
    # killed run: slow steps so that the kill lands mid stage 3
    ws = tmp_path / "killed"
    extra = ("throttle_s=0.25",)
    run_dir = _run_dir(ws, qa_file, extra)
    proc = subprocess.Popen(cmd + _args(qa_file, ws, extra), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not (run_dir / "stage3" / "ckpt-0000002").is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [json.loads((c / "state.json").read_text())["done"] for c in (run_dir / "stage3").glob("ckpt-*")]
    assert done and not any(done)                                   # killed before the end of stage 3
    r = subprocess.run(cmd + _args(qa_file, ws, extra), cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage 2: already done" in r.stderr
    assert "stage 3: resumed from ckpt-000000" in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("boosted:")
    assert _losses(run_dir, 2) == _losses(ref_dir, 2)
    resumed, ref = _losses(run_dir, 3), _losses(ref_dir, 3)
    assert len(resumed) == len(ref) == 7
    assert resumed == ref                                           # bitwise on CPU


def test_ddp_two_cpu_processes_identical_weights(qa_file, tmp_path):
    ws = tmp_path / "ddp"
    extra = ("stage2.micro_batch_size=1", "stage3.micro_batch_size=1", "stage3.max_steps=2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "encoders.spatialboost.cli"] + _args(qa_file, ws, extra)
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-4000:]
    run_dir = _run_dir(ws, qa_file, extra)
    for stage in (2, 3):
        digests = [json.loads((run_dir / f"stage{stage}-rank{k}.json").read_text())["digest"] for k in (0, 1)]
        assert digests[0] == digests[1]
    assert (run_dir / "boosted" / "boosted.json").is_file()
    assert len(_losses(run_dir, 3)) == 2
