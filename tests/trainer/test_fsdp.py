"""FSDP stage 2 (2 CPU processes, gloo) trains, writes world-size independent checkpoints, and 1 process resumes
them on the same loss curve."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _args(data, ws):
    return ["boost", "--encoder", "builtin:tiny-vit", "--data", str(data), "--stages", "2", "--workspace", str(ws),
            "--no-progress", "tracking=false", "max_length=512", "strategy=fsdp", "stage2.batch_size=4",
            "stage2.micro_batch_size=1", "stage2.max_steps=4", "stage2.lr=1e-3", "checkpoint_every=2",
            "keep_checkpoints=3"]


def test_fsdp_two_processes_then_resume_with_one(qa_file, tmp_path):
    ws = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "encoders.spatialboost.cli"] + _args(qa_file, ws)
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-4000:]
    run_dir = _run_dir(qa_file, ws)
    cks = sorted((run_dir / "stage2").glob("ckpt-*"))
    assert [c.name for c in cks] == ["ckpt-0000002", "ckpt-0000004"]
    st = json.loads((cks[-1] / "state.json").read_text())
    assert st["done"] and st["world_size"] == 2 and len(st["losses"]) == 4
    assert st["losses"][-1] < st["losses"][0]                          # it learns
    # full (unsharded) parameters; optimiser state only for the trained parts (projector + LM), keyed by name
    from safetensors.torch import load_file
    from encoders.spatialboost.lm import load_lm
    full = load_file(str(cks[-1] / "model.safetensors"))
    lm = load_lm("builtin:tiny-qwen2").model
    for n, p in lm.named_parameters():
        assert full[f"lm.{n}"].shape == p.shape
    assert not any(n.startswith("encoder.") for n in full)
    opt = torch.load(cks[-1] / "optimizer.pt", weights_only=True)
    names = set(opt["state"])
    assert names == {n for n in full}
    assert all(n.startswith(("lm.", "projector.")) for n in names)
    assert opt["state"]["lm.model.layers.0.mlp.up_proj.weight"]["exp_avg"].shape == full[
        "lm.model.layers.0.mlp.up_proj.weight"].shape
    ref_losses, ref_final = st["losses"], full

    # drop the last checkpoint; one process resumes the 2-process run from step 2 and redoes steps 3-4
    shutil.rmtree(cks[-1])
    from encoders.spatialboost.cli import main
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(qa_file, ws)) == 0
    finally:
        torch.set_num_threads(threads)
    st1 = json.loads((run_dir / "stage2" / "ckpt-0000004" / "state.json").read_text())
    assert st1["done"] and st1["world_size"] == 1
    assert st1["losses"][:2] == ref_losses[:2]
    # same data split, equal answer-token counts per sample: W=2 averaging == W=1 (float order aside)
    assert torch.allclose(torch.tensor(st1["losses"]), torch.tensor(ref_losses), rtol=1e-4, atol=1e-5)
    resumed = load_file(str(run_dir / "stage2" / "ckpt-0000004" / "model.safetensors"))
    assert set(resumed) == set(ref_final)
    for n in ref_final:
        assert torch.allclose(resumed[n], ref_final[n], rtol=1e-3, atol=1e-5), n


def _run_dir(data, ws):
    import argparse
    from harness.config import config_hash
    from encoders.spatialboost.cli import add_boost_parser, boost_config
    p = argparse.ArgumentParser()
    add_boost_parser(p.add_subparsers())
    return Path(ws) / "boost" / config_hash(boost_config(p.parse_args(_args(data, ws))))
