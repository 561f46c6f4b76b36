"""Both Lexicon3D suites end to end through the runner: on a fixture written here in OpenScene's layout
(numpy-array ``.pth`` tuples, ``scannet_2d`` frames without an intrinsic folder = ScanNet's fixed
intrinsics), and on the tiny synthetic world (its ScanNet writer). Bad inputs: a corrupt or unsafe ``.pth``
and a non-rigid pose stop with a DataError naming the file."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import build
from harness.errors import UserError
from harness.runner import EvalConfig, evaluate
from suites.images import DataError
from suites.lexicon3d.scannet import SCANNET_K_640, PoseError, ScanNetData, load_cloud, read_pose, rescale_k

H, W = 48, 64
TINY = {"frame_size": [H, W], "border": 2, "voxel": 0.05, "max_points": 400, "epochs": 2, "lr": 0.01}
TINY_REG = {**{k: v for k, v in TINY.items() if k != "lr"}, "num_points": 32, "d_model": 16, "num_heads": 2,
            "ffn_dim": 32, "num_layers": 1, "pairs_per_scene": 2, "lr": 1e-3,
            "distance_prior": 0.3}


def _render(pose, K, box):
    """Depth and label map of a wall at z = 4 (label 0) behind a box face at z = 2 (label 4 = chair)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    tx = pose[0, 3]
    rx, ry = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    xo, yo = tx + rx * 2.0, ry * 2.0
    obj = (xo >= box[0]) & (xo <= box[1]) & (yo >= box[2]) & (yo <= box[3])
    return np.where(obj, 2.0, 4.0), obj


def _write_scene(root, split, name, seed, n_frames=4):
    rng = np.random.default_rng(seed)
    box = (-0.5 + rng.uniform(-0.2, 0.2), 0.5 + rng.uniform(-0.2, 0.2), -0.4, 0.4)
    K = rescale_k(SCANNET_K_640, (480, 640), (H, W))
    d2 = root / "scannet_2d" / name
    pts, labels = [], []
    for f in range(n_frames):
        pose = np.eye(4)
        pose[0, 3] = -0.3 + 0.6 * f / max(1, n_frames - 1)
        depth, obj = _render(pose, K, box)
        rgb = np.where(obj[..., None], [200, 40, 40], [120, 120, 120]).astype(np.uint8)
        rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
        for sub in ("color", "depth", "pose"):
            (d2 / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(d2 / "color" / f"{f}.jpg")
        Image.fromarray((depth * 1000).astype(np.uint16)).save(d2 / "depth" / f"{f}.png")
        np.savetxt(d2 / "pose" / f"{f}.txt", pose)
        vv, uu = np.mgrid[0:H:2, 0:W:2].reshape(2, -1)
        z = depth[vv, uu]
        p = np.stack([(uu - K[0, 2]) / K[0, 0] * z + pose[0, 3], (vv - K[1, 2]) / K[1, 1] * z, z], 1)
        pts.append(p)
        labels.append(np.where(obj[vv, uu], 4, 0))
    d3 = root / "scannet_3d" / split
    d3.mkdir(parents=True, exist_ok=True)
    coords = np.concatenate(pts).astype(np.float32)
    colors = np.zeros_like(coords)
    torch.save((coords, colors, np.concatenate(labels).astype(np.int64)), d3 / f"{name}_vh_clean_2.pth")


@pytest.fixture(scope="module")
def openscene(tmp_path_factory):
    root = tmp_path_factory.mktemp("openscene") / "scannet"
    for i in range(4):
        _write_scene(root, "train", f"scene{i:04d}_00", i)
    for i in range(4, 6):
        _write_scene(root, "val", f"scene{i:04d}_00", i)
    return root


def _cfg(suite, ws, data=None, world=None, **protocol):
    d = {"encoder": "builtin:tiny-vit", "suite": suite, "workspace": str(ws), "progress": False,
         "protocol": protocol}
    if data is not None:
        d["data"] = str(data)
    if world is not None:
        d["world"] = world
    return build(EvalConfig, d)


def test_reader_accepts_openscene_numpy_tuples(openscene):
    data = ScanNetData(openscene)
    assert [s.name for s in data.splits["val"]] == ["scene0004_00", "scene0005_00"]
    coords, colors, labels = load_cloud(data.splits["train"][0].cloud)
    assert coords.shape[1] == 3 and set(np.unique(labels)) == {0, 4}
    s = data.splits["train"][0]
    np.testing.assert_allclose(s.intrinsics((240, 320)), rescale_k(SCANNET_K_640, (480, 640), (240, 320)))


def test_both_suites_on_openscene_fixture(openscene, workspace):
    sem = evaluate(_cfg("lexicon3d.semantic", workspace, openscene, **TINY))
    for m in ("mIoU", "acc", "val.mIoU", "floor.mIoU", "floor.acc", "floor_height.mIoU", "floor_height.acc"):
        assert np.isfinite(sem.metrics[m]), m
    assert 0 <= sem.metrics["floor.acc"] <= 100 and 0 <= sem.metrics["floor_height.acc"] <= 100
    reg = evaluate(_cfg("lexicon3d.registration", workspace, openscene, **{**TINY_REG, "epochs": 4}))
    for m in ("RR", "RRE", "RTE", "RMSE", "val.RR", "floor.RR", "floor.RTE", "floor_icp.RR", "floor_icp.RTE",
              "regtr_icp.RR", "regtr_icp.RTE"):
        assert np.isfinite(reg.metrics[m]), m
    assert reg.metrics["floor.RRE"] > 0                  # the source was moved
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace}/mlflow.db")
    arts = [a.path for a in client.list_artifacts(reg.run_id, "per_sample")]
    assert "per_sample/RR.npz" in arts and "per_sample/floor.RTE.npz" in arts and "per_sample/floor_icp.RR.npz" in arts
    # version 5: the head's epoch is the one with the lowest held-out RTE, the validation metric it reports
    hist = [m.value for m in client.get_metric_history(reg.run_id, "regtr.val_RTE")]
    assert len(hist) == 4 and reg.metrics["val.RTE"] == pytest.approx(min(hist))
    rr = [m.value for m in client.get_metric_history(reg.run_id, "regtr.val_RR")]
    assert reg.metrics["val.RR"] == pytest.approx(rr[int(np.argmin(hist))])
    # one lifting pass: the registration run found the semantic run's lifted features
    derived = list((workspace / "cache" / "derived").iterdir())
    assert len([p for p in derived if not p.name.startswith(".")]) == 1


def test_tiny_world_end_to_end(workspace):
    from harness.registry import SUITES
    for name in ("lexicon3d.semantic", "lexicon3d.registration"):
        cls = SUITES.get(name)
        rec = evaluate(_cfg(name, workspace, world="tiny", **cls.demo_protocol("tiny")))
        assert np.isfinite(rec.metrics[cls.spec.primary]) and f"floor.{cls.spec.primary}" in rec.metrics


def test_corrupt_and_unsafe_pth_name_the_file(tmp_path, openscene):
    bad = tmp_path / "x_vh_clean_2.pth"
    rng = np.random.default_rng(0)
    good = (openscene / "scannet_3d" / "train" / "scene0000_00_vh_clean_2.pth").read_bytes()
    payloads = [rng.bytes(200) for _ in range(20)] + [good[:len(good) // 2], b"\x80\x02]q\x00(K\x01e."]
    for i in range(20):       # flipped bytes inside a real file
        b = bytearray(good)
        pos = rng.integers(0, len(b), 8)
        for p in pos:
            b[p] ^= 0xFF
        payloads.append(bytes(b))
    for i, data in enumerate(payloads):
        bad.write_bytes(data)
        if i < 22:                     # garbage, a truncated file, a plain pickle of a list: always refused
            with pytest.raises(DataError, match="x_vh_clean_2.pth"):
                load_cloud(bad)
            continue
        try:
            load_cloud(bad)            # a flip in padding may leave the file valid; then it must still load
        except DataError as e:         # and anything else is a DataError naming the file, never a crash
            assert "x_vh_clean_2.pth" in str(e)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    evil = tmp_path / "evil_vh_clean_2.pth"
    torch.save((np.zeros((3, 3)), np.zeros((3, 3)), Evil()), evil)
    with pytest.raises(DataError, match="evil_vh_clean_2.pth"):
        load_cloud(evil)
    wrong = tmp_path / "w_vh_clean_2.pth"
    torch.save((np.zeros((3, 3)), np.zeros((3, 3)), np.full(3, 40)), wrong)
    with pytest.raises(DataError, match="label 40"):
        load_cloud(wrong)
    # through the suite: a corrupt cloud in the dataset stops the run with the file's name
    root = tmp_path / "root"
    shutil.copytree(openscene, root)
    victim = root / "scannet_3d" / "val" / "scene0005_00_vh_clean_2.pth"
    victim.write_bytes(b"not a torch file")
    from harness.registry import SUITES
    cls = SUITES.get("lexicon3d.semantic")
    with pytest.raises(UserError, match="scene0005_00_vh_clean_2.pth"):
        _direct(cls, root, tmp_path)


def test_non_rigid_pose_names_the_file(tmp_path, openscene):
    p = tmp_path / "0.txt"
    np.savetxt(p, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(PoseError, match="0.txt"):
        read_pose(p)
    np.savetxt(p, np.full((4, 4), -np.inf))
    assert read_pose(p) is None                      # ScanNet's invalid poses are skipped, not errors
    root = tmp_path / "root"
    shutil.copytree(openscene, root)
    np.savetxt(root / "scannet_2d" / "scene0001_00" / "pose" / "2.txt", np.diag([1.0, 1.0, 1.3, 1.0]))
    from harness.registry import SUITES
    with pytest.raises(PoseError, match="scene0001_00/pose/2.txt"):
        _direct(SUITES.get("lexicon3d.registration"), root, tmp_path)


def _direct(cls, data, tmp_path):
    from harness.cache import FeatureCache
    from harness.registry import build_encoder
    from harness.suite import RunContext
    proto = TINY_REG if cls.spec.name.endswith("registration") else TINY
    s = cls(build(cls.Options, proto, prefix="protocol."))
    ctx = RunContext(encoder=build_encoder("builtin:tiny-vit"), data=data, heads=cls.spec.heads, mode="fast",
                     device=torch.device("cpu"), precision="fp32", batch_size=8, num_workers=0, seed=0,
                     cache=FeatureCache(tmp_path / "cache"), progress=False)
    return s.run(ctx)


def test_height_prior_floor_known_values():
    """Heights are measured from each scene's floor (1st-percentile z), so a raised scene gets the same prior;
    each 0.1 m bin predicts its most frequent fitting class, empty bins the majority, higher points the top bin."""
    from suites.lexicon3d.scannet import IGNORE
    from suites.lexicon3d.semantic import apply_height_prior, height_prior, heights
    z = np.r_[np.zeros(60), np.full(20, 0.75), np.full(20, 2.0)]
    coords = np.c_[np.zeros((100, 2)), z + 5.0]                 # a scene whose floor is at z = 5 m
    h = heights(coords)
    assert h.min() == 0 and h.max() == pytest.approx(2.0)
    labels = np.r_[np.full(60, 1), np.full(15, 6), np.full(5, 1), np.full(19, 0), IGNORE]   # floor, table, wall
    prior = height_prior(h, labels, 0.1)
    assert len(prior) == 21 and prior[0] == 1 and prior[7] == 6 and prior[20] == 0
    assert (prior[1:7] == 1).all() and (prior[8:20] == 1).all()      # bins no point reached: the majority (1)
    pred = apply_height_prior(prior, np.array([0.05, 0.72, 1.3, 2.04, 9.0, -0.3]), 0.1)
    assert pred.tolist() == [1, 6, 1, 0, 0, 1]
