"""Retrieval signal and fidelity: the random-ranking floor (exact expectation), per-query records, oracle
rankings, the Paris default's own landmarks, Met's kNN scores starting at 0, errors without --data."""
import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures import reference_met_knn

from harness.commands.cli import main
from harness.config import build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate
from harness.samples import check_consistent
from suites.retrieval.metrics import (compute_map, expected_random_ap, expected_random_pk, knn_classify,
                                      random_ranking_floor, revisitop_protocol)

GND = [{"ok": [1, 4], "junk": [2]}, {"ok": [0, 3, 5], "junk": []}, {"ok": [6], "junk": [0, 1]},
       {"ok": [], "junk": [1]}, {"ok": [0, 1, 2, 3, 4, 5, 6], "junk": []}]


def test_floor_equals_the_average_over_every_ranking():
    """All 7! orders of a 7-image database, scored by revisitop's own AP / P@k (junk included)."""
    kappas = (1, 2, 5, 10)
    aps, pks = [], []
    for perm in itertools.permutations(range(7)):
        r = compute_map(np.array([perm] * len(GND)), GND, kappas)
        aps.append(r.aps)
        pks.append(r.pks)
    f_ap, f_pk = random_ranking_floor(GND, 7, kappas)
    np.testing.assert_allclose(f_ap, np.mean(aps, 0), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(f_pk, np.mean(pks, 0), rtol=1e-12, equal_nan=True)
    assert np.isnan(f_ap[3]) and f_ap[4] == pytest.approx(1.0)     # no positive: skipped; all positive: 1


def test_floor_matches_seeded_permutations_on_a_larger_database():
    rng = np.random.default_rng(0)
    n, m, draws = 300, 12, 4000
    ranks = np.stack([rng.permutation(n) for _ in range(draws)])
    res = compute_map(ranks, [{"ok": np.arange(m)}] * draws, (1, 5, 10))
    assert expected_random_ap(n, m) == pytest.approx(res.map, abs=4 * res.aps.std() / np.sqrt(draws))
    for c, k in enumerate((1, 5, 10)):
        sd = res.pks[:, c].std() / np.sqrt(draws)
        assert expected_random_pk(n, m, k) == pytest.approx(res.mpk[c], abs=4 * sd + 1e-9)
    assert expected_random_ap(n, m) < 0.1                            # far below any encoder worth the name


def _score(ranks, gnd, n_db):
    cls = SUITES.get("retrieval.roxford")
    res = cls.score(ranks, gnd, [f"q{i}" for i in range(len(gnd))], n_db, (1, 5, 10))
    for name, samples in res.per_sample.items():
        check_consistent(name, res.metrics[name], samples)
    return res


def _revisited_gnd(rng, nq=6, n_db=40):
    gnd = []
    for _ in range(nq):
        items = rng.permutation(n_db)
        gnd.append({"easy": items[:3], "hard": items[3:6], "junk": items[6:8]})
    return gnd


def test_oracle_perfect_ranking_scores_100_and_a_constant_model_scores_the_floor():
    rng = np.random.default_rng(1)
    n_db = 40
    gnd = _revisited_gnd(rng, n_db=n_db)
    # perfect: every query's easy and hard images first (junk is ignored by every setup)
    perfect = np.stack([np.concatenate([g["easy"], g["hard"], np.setdiff1d(np.arange(n_db),
                                                                            np.r_[g["easy"], g["hard"]])])
                        for g in gnd])
    res = _score(perfect, gnd, n_db)
    for lv in "EMH":
        assert res.metrics[f"mAP.{lv}"] == pytest.approx(100.0)
        assert res.metrics[f"mP1.{lv}"] == pytest.approx(100.0)
        assert res.metrics[f"floor.mAP.{lv}"] < 20
    # a constant model ties every image, so its ranking is the gallery order: over the orders of the
    # gallery it scores the floor on average
    draws = 3000
    maps = {lv: [] for lv in "EMH"}
    for _ in range(draws):
        order = rng.permutation(n_db)
        r = _score(np.stack([order] * len(gnd)), gnd, n_db)
        for lv in "EMH":
            maps[lv].append(r.metrics[f"mAP.{lv}"])
    for lv in "EMH":
        sd = np.std(maps[lv]) / np.sqrt(draws)
        assert np.mean(maps[lv]) == pytest.approx(res.metrics[f"floor.mAP.{lv}"], abs=4 * sd)
    # the floor's per-query rows are the exact expectation of each query
    f_ap, _ = random_ranking_floor(revisitop_protocol(gnd, "hard"), n_db)
    np.testing.assert_allclose(res.per_sample["floor.mAP.H"].stats[:, 0], f_ap)
    assert res.per_sample["mAP.H"].ids == [f"q{i}" for i in range(len(gnd))]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from suites.synthetic.world import WorldConfig, generate_world
    out = tmp_path_factory.mktemp("retrieval-world") / "w"
    generate_world(WorldConfig(seed=5, num_scenes=4, views_per_scene=3, image_size=(64, 96), min_objects=3,
                               max_objects=5, shadows=False, antialias=0), out, workers=1, progress=False)
    return out


def test_paris_default_has_its_own_landmarks(world, tmp_path):
    from suites.synthetic.writers import write_roxford
    ox = write_roxford(world, tmp_path / "ox")
    pa = write_roxford(world, tmp_path / "pa", name="rparis6k", landmarks="last")
    g_ox = pickle.loads((ox / "gnd_roxford5k.pkl").read_bytes())
    g_pa = pickle.loads((pa / "gnd_rparis6k.pkl").read_bytes())
    scene = lambda n: int(n.split("_s")[1][:5])  # noqa: E731
    assert {scene(q) for q in g_ox["qimlist"]} == {0, 1}
    assert {scene(q) for q in g_pa["qimlist"]} == {2, 3}
    assert not set(g_ox["qimlist"]) & set(g_pa["qimlist"])
    # Oxford's landmark views are Paris's distractors and vice versa: every view is in one of each list
    assert set(g_ox["imlist"] + g_ox["qimlist"]) == set(g_pa["imlist"] + g_pa["qimlist"])
    with pytest.raises(ValueError, match="landmarks must be"):
        write_roxford(world, tmp_path / "bad", landmarks="middle")


def _small_roxford(root):
    from PIL import Image
    from fixtures import class_image
    rng = np.random.default_rng(0)
    imlist = [f"db_{c}_{i}" for c in range(3) for i in range(4)]
    for n in imlist + ["q_0", "q_1", "q_2"]:
        (root / "jpg").mkdir(parents=True, exist_ok=True)
        c = int(n.split("_")[1])
        class_image(c, rng, 48).save(root / "jpg" / f"{n}.jpg")
    gnd = [{"bbx": [0.0, 0.0, 48.0, 48.0], "easy": [4 * c, 4 * c + 1], "hard": [4 * c + 2],
            "junk": [4 * c + 3]} for c in range(3)]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": ["q_0", "q_1", "q_2"], "gnd": gnd}, f)
    return root


def test_revisited_run_reports_floor_and_per_query_ap(tmp_path):
    data = _small_roxford(tmp_path / "rox")
    ws = tmp_path / "ws"
    rec = evaluate(build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "retrieval.roxford", "data": str(data),
                                      "workspace": str(ws), "progress": False}))
    # 12 database images, junk 1 (hard: + 2 easy) per query: floor = the exact expectation
    f = {lv: 100 * np.mean(random_ranking_floor(revisitop_protocol(
        [{"easy": [4 * c, 4 * c + 1], "hard": [4 * c + 2], "junk": [4 * c + 3]} for c in range(3)], lv), 12)[0])
        for lv in ("easy", "medium", "hard")}
    assert rec.metrics["floor.mAP.H"] == pytest.approx(f["hard"])
    assert rec.metrics["floor.mAP.E"] == pytest.approx(f["easy"])
    import mlflow
    client = mlflow.MlflowClient(f"sqlite:///{ws}/mlflow.db")
    names = {Path(a.path).name for a in client.list_artifacts(rec.run_id, "per_sample")}
    assert {"mAP.H.npz", "floor.mAP.H.npz", "mAP.E.npz", "mP10.M.npz"} <= names


def test_met_knn_scores_start_at_zero_as_the_reference():
    rng = np.random.default_rng(3)
    sims = np.sort(rng.uniform(-0.6, 0.5, size=(200, 7)), axis=1)[:, ::-1]     # mixed signs, descending
    labels = rng.integers(0, 5, size=(200, 7))
    for t in (1.0, 20.0):
        p, c = knn_classify(sims, labels, t, n_classes=9)
        rp, rc = reference_met_knn(sims, labels, t, 9)
        np.testing.assert_array_equal(p, rp)
        np.testing.assert_allclose(c, rc, rtol=1e-9)
    # all similarities negative: every seen class scores 0, the smallest label wins
    p, c = knn_classify(np.array([[-0.1, -0.3]]), np.array([[4, 2]]), 10.0, n_classes=5)
    assert p[0] == 2 and c[0] == pytest.approx(1 / 5)


@pytest.mark.parametrize("suite, what", [("retrieval.met", "ground_truth"), ("retrieval.amstertime", "old/")])
def test_suites_without_default_data_ask_for_data(suite, what, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["eval", "--encoder", "builtin:tiny-vit", "--suite", suite, "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert f"suite {suite} has no embedded default data: pass --data" in err and what in err
    assert "Traceback" not in err and not (ws / "mlflow.db").exists()


@pytest.mark.parametrize("suite, override, message", [
    ("retrieval.roxford", "protocol.kappas=[0]", "protocol.kappas[0]=0: must be >= 1"),
    ("retrieval.rparis", "protocol.image_size=0", "protocol.image_size=0: must be >= 1"),
    ("retrieval.met", "protocol.t_grid=[0]", "protocol.t_grid[0]=0.0: must be > 0"),
    ("retrieval.met", "protocol.k_grid=[]", "protocol.k_grid: must not be empty"),
])
def test_out_of_range_options(suite, override, message, tmp_path, capsys):
    assert main(["eval", "--encoder", "builtin:tiny-vit", "--suite", suite, "--data", str(tmp_path),
                 "--workspace", str(tmp_path / "ws"), override]) == 2
    assert message in capsys.readouterr().err


def test_demo_protocols_are_valid():
    for name in ("retrieval.roxford", "retrieval.rparis"):
        cls = SUITES.get(name)
        for preset in ("tiny", "default"):
            build(cls.Options, cls.demo_protocol(preset))
        assert cls.demo_protocol("tiny") == {}                     # tiny-vit has 4 blocks: paper settings


def test_layer_option_reads_that_block_and_refuses_out_of_range(tmp_path):
    import torch
    from encoders.spec import build_encoder
    from harness.cache import FeatureCache
    from harness.config import ConfigError
    from harness.suite import RunContext
    data = _small_roxford(tmp_path / "rox")
    cls = SUITES.get("retrieval.roxford")
    ctx = RunContext(encoder=build_encoder("builtin:tiny-vit"), data=data, heads=("cosine",), mode="fast",
                     device=torch.device("cpu"), precision="fp32", batch_size=8, num_workers=0, seed=0,
                     cache=FeatureCache(tmp_path / "cache"), progress=False)
    res = cls(build(cls.Options, {"layer": -3})).run(ctx)
    assert res.selection["cosine"]["block"] == 1                     # tiny-vit: 4 blocks, -3 -> 1
    with pytest.raises(ConfigError, match="protocol.layer=-9"):
        cls(build(cls.Options, {"layer": -9})).run(ctx)
