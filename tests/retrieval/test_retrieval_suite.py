"""The retrieval suites end to end through the runner (builtin tiny ViT, data written in the real layouts)."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from fixtures import class_image
from harness.cache import FeatureCache
from harness.config import build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate
from harness.suite import RunContext


def _run_direct(suite, data, tmp_path, **protocol):
    """suite.run without MLflow (the runner path is covered by the Oxford test)."""
    import torch
    from encoders.spec import build_encoder
    cls = SUITES.get(suite)
    s = cls(build(cls.Options, protocol))
    ctx = RunContext(encoder=build_encoder("builtin:tiny-vit"), data=data, heads=cls.spec.heads, mode="fast",
                     device=torch.device("cpu"), precision="fp32", batch_size=8, num_workers=0, seed=0,
                     cache=FeatureCache(tmp_path / "cache"), progress=False)
    assert s.dataset_fingerprint(data)
    check = s.validate(ctx)
    assert check["feature_dim"] == 64
    res = s.run(ctx)
    missing = [m.name for m in cls.spec.metrics if m.name not in res.metrics]
    assert not missing
    return res


def _cfg(suite, data, ws, **protocol):
    return build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": suite, "data": str(data),
                              "workspace": str(ws), "progress": False, "protocol": protocol})


def _save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture(scope="module")
def roxford(tmp_path_factory):
    root = tmp_path_factory.mktemp("rox") / "roxford5k"
    rng = np.random.default_rng(0)
    imlist = [f"db_{c}_{i}" for c in range(3) for i in range(3)]
    for n in imlist:
        _save(class_image(int(n.split("_")[1]), rng, 48), root / "jpg" / f"{n}.jpg")
    qimlist = ["q_0", "q_1"]
    for c, n in enumerate(qimlist):
        _save(class_image(c, rng, 48), root / "jpg" / f"{n}.jpg")
    gnd = [{"bbx": np.array([2.0, 2.0, 46.0, 46.0]), "easy": np.array([3 * c, 3 * c + 1]),
            "hard": np.array([3 * c + 2]), "junk": np.array([], dtype=np.int64)} for c in range(2)]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root


def test_roxford_suite_end_to_end(roxford, workspace):
    from harness.runner import validate
    assert validate(_cfg("retrieval.roxford", roxford, workspace))["check"]["queries"] == 2
    rec = evaluate(_cfg("retrieval.roxford", roxford, workspace))
    for lv in "EMH":
        assert 0 <= rec.metrics[f"mAP.{lv}"] <= 100
        assert 0 <= rec.metrics[f"mP10.{lv}"] <= 100
    again = evaluate(_cfg("retrieval.roxford", roxford, workspace))
    assert again.reused


def test_amstertime_suite_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    for i, stem in enumerate(["0000", "0002", "0005"]):
        _save(class_image(i, rng, 40), tmp_path / "at" / "old" / f"{stem}.jpg")
        _save(class_image(i, rng, 40), tmp_path / "at" / "new" / f"{stem}.png")
    res = _run_direct("retrieval.amstertime", tmp_path / "at", tmp_path)
    m = res.metrics
    assert 1 / 3 * 100 - 1e-6 <= m["mAP"] <= 100       # AP >= 1/rank >= 1/3 with 3 items
    assert m["top5"] == pytest.approx(100.0)             # gallery of 3: always within top 5
    assert m["top1"] <= m["mAP"] + 1e-9
    assert len(res.figures["topk"].axes) == 3 * (1 + 3)  # 3 queries, each with its (whole) gallery of 3


def test_met_suite_end_to_end(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "met"
    db, val, test = [], [], []
    for c in range(3):
        for i in range(2):
            p = f"MET/{c}/{i}.jpg"
            _save(class_image(c, rng, 40 + 8 * i), root / "images" / p)
            db.append({"id": c, "path": p})
        for split, lst in (("val", val), ("test", test)):
            p = f"{split}_met/{c}.jpg"
            _save(class_image(c, rng, 37), root / "images" / p)
            lst.append({"path": p, "MET_id": c})
    for split, lst in (("val", val), ("test", test)):
        p = f"{split}_noart/0.jpg"
        _save(Image.new("RGB", (30, 20), (128, 128, 128)), root / "images" / p)
        lst.append({"path": p})
    (root / "ground_truth").mkdir()
    for name, lst in (("MET_database", db), ("valset", val), ("testset", test)):
        (root / "ground_truth" / f"{name}.json").write_text(json.dumps(lst))
    res = _run_direct("retrieval.met", root, tmp_path, k_grid=[1, 3], t_grid=[1.0, 25.0])
    for m in ("GAP", "GAP.nodistr", "ACC", "val.GAP"):
        assert 0 <= res.metrics[m] <= 100
    assert res.selection["knn"]["K"] in (1, 3) and res.selection["knn"]["t"] in (1.0, 25.0)
    assert res.details["test_distractors"] == 1
    strip = res.figures["topk"]                           # the 3 art queries (never the distractor), top-3
    assert len(strip.axes) == 3 * (1 + 3)
    assert [ax.get_title() for ax in strip.axes[::4]] == [f"query test_met/{c}.jpg" for c in range(3)]


def test_topk_strip_marks_hits_and_shows_cropped_queries(roxford):
    """Border colours follow the ground truth (medium setup: easy/hard correct, junk grey, others red)."""
    import dataclasses
    from matplotlib.colors import to_rgba
    from suites.retrieval.datasets import load_revisited
    from suites.retrieval.figures import COLOURS, revisited_strip
    d = load_revisited(roxford, "roxford5k")
    d = dataclasses.replace(d, gnd=[dataclasses.replace(d.gnd[0], junk=np.array([4])), d.gnd[1]])
    ranks = np.array([[0, 3, 2, 4, 1, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    fig = revisited_strip(d, ranks)
    axes = np.array(fig.axes).reshape(2, 6)
    want = [["query", "correct", "wrong", "correct", "junk", "correct"],     # query 0: positives 0, 1, 2
            ["query", "wrong", "wrong", "wrong", "correct", "correct"]]      # query 1: positives 3, 4, 5
    for row, verdicts in zip(axes, want):
        for ax, v in zip(row, verdicts):
            assert ax.spines["left"].get_edgecolor() == to_rgba(COLOURS[v])
    assert axes[0, 0].get_images()[0].get_array().shape[:2] == (44, 44)      # the 48 px image cropped to bbx
    assert axes[0, 1].get_images()[0].get_array().shape[:2] == (48, 48)


def test_runner_logs_the_topk_strip(roxford, workspace):
    import mlflow
    rec = evaluate(_cfg("retrieval.roxford", roxford, workspace))
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    assert [f.path for f in client.list_artifacts(rec.run_id, "figures")] == ["figures/topk.png"]
    with Image.open(client.download_artifacts(rec.run_id, "figures/topk.png")) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 150
