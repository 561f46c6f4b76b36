"""Retrieval metrics against hand-computed cases, slow re-implementations and properties."""
import math

import numpy as np
import pytest
from fixtures import reference_met_knn

from suites.retrieval import metrics as M

# ----------------------------------------------------------------------------------------------------
# revisitop AP / mAP / mP@k
# ----------------------------------------------------------------------------------------------------


def test_compute_ap_by_hand():
    # positives at ranks 0 and 2, nres 2:
    #   j=0, r=0: p0 = 1,   p1 = 1/1 -> (1 + 1)/2 / 2     = 1/2
    #   j=1, r=2: p0 = 1/2, p1 = 2/3 -> (1/2 + 2/3)/2 / 2 = 7/24      AP = 19/24
    assert M.compute_ap([0, 2], 2) == pytest.approx(19 / 24)
    # one of two positives retrieved at rank 1: j=0, r=1: p0 = 0/1, p1 = 1/2 -> (0 + 1/2)/2 / 2 = 1/8
    assert M.compute_ap([1], 2) == pytest.approx(1 / 8)
    assert M.compute_ap([], 3) == 0.0
    assert M.compute_ap([0, 1, 2], 3) == pytest.approx(1.0)


def test_compute_map_by_hand_with_junk_and_mpk():
    ranks = np.array([
        [0, 1, 2, 3, 4],      # q0: ok {0, 2} at ranks 0, 2          -> AP 19/24 (above)
        [5, 0, 7, 2, 3],      # q1: ok {0, 2} at 1, 3; junk {5, 7} at 0, 2 -> shifted 0, 1 -> AP 1
        [3, 0, 1, 4, 2],      # q2: no positives -> skipped (NaN)
    ])
    gnd = [{"ok": [0, 2], "junk": []}, {"ok": [0, 2], "junk": [5, 7]}, {"ok": [], "junk": [1]}]
    res = M.compute_map(ranks, gnd, kappas=(1, 5, 10))
    assert res.aps[0] == pytest.approx(19 / 24)
    assert res.aps[1] == pytest.approx(1.0)
    assert math.isnan(res.aps[2]) and np.isnan(res.pks[2]).all()
    assert res.map == pytest.approx((19 / 24 + 1) / 2)
    # mP@k, revisitop's definition: q0 1-based positive ranks [1, 3]:
    #   k=1: kq = min(3, 1) = 1 -> 1/1;  k=5: kq = min(3, 5) = 3 -> 2/3;  k=10: 2/3
    # q1 shifted 1-based ranks [1, 2]: k=1 -> 1; k=5: kq = 2 -> 2/2 = 1; k=10 -> 1
    np.testing.assert_allclose(res.pks[0], [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(res.pks[1], [1, 1, 1])
    np.testing.assert_allclose(res.mpk, [1, 5 / 6, 5 / 6])


def test_truncated_ranking_positive_not_retrieved():
    # top-3 cut of a larger gallery; ok {0, 9}: only 0 retrieved, at rank 1 -> AP 1/8;
    # P@1: pos1=[2], kq=min(2,1)=1 -> 0; P@5: kq=2 -> 1/2
    res = M.compute_map(np.array([[3, 0, 1]]), [{"ok": [0, 9]}], kappas=(1, 5))
    assert res.map == pytest.approx(1 / 8)
    np.testing.assert_allclose(res.pks[0], [0, 0.5])
    # no positive retrieved at all: AP 0, P@k 0 (revisitop would crash on max([]))
    res = M.compute_map(np.array([[3, 4, 1]]), [{"ok": [0]}], kappas=(1,))
    assert res.map == 0.0 and res.pks[0, 0] == 0.0


def test_protocols_by_hand():
    gnd = [{"bbx": [0, 0, 1, 1], "easy": [0], "hard": [1], "junk": [2]}]
    e, m, h = (M.revisitop_protocol(gnd, lv)[0] for lv in ("easy", "medium", "hard"))
    assert (set(e["ok"]), set(e["junk"])) == ({0}, {1, 2})
    assert (set(m["ok"]), set(m["junk"])) == ({0, 1}, {2})
    assert (set(h["ok"]), set(h["junk"])) == ({1}, {0, 2})
    # ranking [3, 1, 2, 0]
    #  easy:   ok {0} at 3, junk {1,2} at 1,2 above it -> rank 1: (0 + 1/2)/2 = 1/4
    #  medium: ok {0,1} at 1,3, junk {2} at 2 -> shifted 1,2: (0+1/2)/2 + (1/2+2/3)/2 = 5/6, /2 = 5/12
    #  hard:   ok {1} at 1, junk {0,2} below -> rank 1 -> 1/4
    out = M.evaluate_revisitop(np.array([[3, 1, 2, 0]]), gnd, kappas=(1, 5))
    assert out["mAP.E"] == pytest.approx(1 / 4)
    assert out["mAP.M"] == pytest.approx(5 / 12)
    assert out["mAP.H"] == pytest.approx(1 / 4)
    #  mP@5: easy pos1=[2] -> kq=2 -> 1/2; medium pos1=[2,3] -> kq=3 -> 2/3; hard pos1=[2] -> 1/2
    assert (out["mP1.E"], out["mP1.M"], out["mP1.H"]) == (0, 0, 0)
    assert out["mP5.E"] == pytest.approx(1 / 2)
    assert out["mP5.M"] == pytest.approx(2 / 3)
    assert out["mP5.H"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="unknown protocol"):
        M.revisitop_protocol(gnd, "medium-rare")


def _slow_ap_and_pk(row, ok, junk, kappas):
    """Independent reading of the definition: walk the ranking; junk items do not advance the rank."""
    ok, junk = set(ok), set(junk)
    eff, pos = 0, []
    for item in row:
        if item in ok:
            pos.append(eff)
        if item in junk:
            continue
        eff += 1
    ap = 0.0
    for j, r in enumerate(pos):
        p0 = 1.0 if r == 0 else j / r
        p1 = (j + 1) / (r + 1)
        ap += (p0 + p1) / 2 / len(ok)
    pks = []
    for k in kappas:
        if not pos:
            pks.append(0.0)
            continue
        kq = min(max(pos) + 1, k)
        pks.append(sum(1 for r in pos if r + 1 <= kq) / kq)
    return ap, pks


@pytest.mark.parametrize("seed", range(5))
def test_compute_map_matches_slow_definition(seed):
    rng = np.random.default_rng(seed)
    n, nq, kappas = 60, 25, (1, 5, 10)
    ranks = np.stack([rng.permutation(n) for _ in range(nq)])
    if seed % 2:                      # top-n cut
        ranks = ranks[:, :30]
    gnd = []
    for _ in range(nq):
        items = rng.permutation(n)
        n_ok, n_junk = rng.integers(0, 8), rng.integers(0, 10)
        ok, junk = items[:n_ok], items[n_ok:n_ok + n_junk]
        if seed == 4 and n_ok:        # overlapping ok/junk, as revisitop allows
            junk = np.concatenate([junk, ok[:1]])
        gnd.append({"ok": ok, "junk": junk})
    res = M.compute_map(ranks, gnd, kappas)
    for i in range(nq):
        if len(gnd[i]["ok"]) == 0:
            assert np.isnan(res.aps[i])
            continue
        ap, pks = _slow_ap_and_pk(ranks[i], gnd[i]["ok"], gnd[i]["junk"], kappas)
        assert res.aps[i] == pytest.approx(ap, abs=1e-12)
        np.testing.assert_allclose(res.pks[i], pks, atol=1e-12)


def test_ap_properties():
    rng = np.random.default_rng(7)
    n = 50
    for _ in range(20):
        ok = rng.choice(n, rng.integers(1, 10), replace=False)
        rest = np.setdiff1d(np.arange(n), ok)
        junk = rng.choice(rest, 5, replace=False)
        others = np.setdiff1d(rest, junk)
        # perfect ranking -> 1, also with junk interleaved anywhere
        perfect = np.concatenate([rng.permutation(ok), rng.permutation(others), junk])
        assert M.compute_map(perfect[None], [{"ok": ok, "junk": junk}]).map == pytest.approx(1.0)
        # moving junk around never changes the AP
        base = rng.permutation(np.concatenate([ok, others]))
        ap0 = M.compute_map(base[None], [{"ok": ok}]).map
        for _ in range(3):
            row = list(base)
            for jk in junk:
                row.insert(int(rng.integers(0, len(row) + 1)), jk)
            assert M.compute_map(np.array(row)[None], [{"ok": ok, "junk": junk}]).map == pytest.approx(ap0)
        assert 0 < ap0 <= 1


def test_compute_map_shape_errors():
    with pytest.raises(ValueError, match="query-major"):
        M.compute_map(np.zeros((5, 2), dtype=int), [{"ok": [1]}, {"ok": [0]}])
    with pytest.raises(ValueError, match="no query has a positive"):
        M.compute_map(np.zeros((1, 3), dtype=int), [{"ok": []}])


# ----------------------------------------------------------------------------------------------------
# Met
# ----------------------------------------------------------------------------------------------------


def test_gap_by_hand():
    preds, labels = [1, 2, 3, 4], [1, 9, 3, -1]
    # confidences in query order: rel = [1, 0, 1, 0], P@i = [1, 1/2, 2/3, 2/4]
    # GAP = (1 + 2/3) / M, M = 3 non-distractors = 5/9
    assert M.gap(preds, [0.9, 0.8, 0.7, 0.6], labels) == pytest.approx(5 / 9)
    # distractor most confident: order q3, q0, q1, q2 -> rel [0, 1, 0, 1], P@i [0, 1/2, 1/3, 2/4]
    # GAP = (1/2 + 1/2) / 3 = 1/3; without distractors the order is q0, q1, q2 -> 5/9
    confs = [0.9, 0.8, 0.7, 0.95]
    assert M.gap(preds, confs, labels) == pytest.approx(1 / 3)
    assert M.gap_non_distractor(preds, confs, labels) == pytest.approx(5 / 9)
    assert M.accuracy_non_distractor(preds, labels) == pytest.approx(2 / 3)
    out = M.evaluate_met(preds, confs, labels)
    assert out == pytest.approx({"GAP": 1 / 3, "GAP.nodistr": 5 / 9, "ACC": 2 / 3})


def test_knn_classify_by_hand():
    sims = np.array([[0.9, 0.8, 0.7]])
    labels = np.array([[5, 7, 5]])
    # classes 5 (max 0.9) and 7 (0.8); 10 classes in all, 8 unseen count exp(0) = 1 each
    # conf = e^0.9 / (e^0.9 + e^0.8 + 8) = 2.459603 / 12.685144 = 0.193897
    p, c = M.knn_classify(sims, labels, t=1.0, n_classes=10)
    assert p[0] == 5 and c[0] == pytest.approx(math.exp(0.9) / (math.exp(0.9) + math.exp(0.8) + 8))
    # k=1: only class 5: e^0.9 / (e^0.9 + 9) = 0.214633
    p, c = M.knn_classify(sims, labels, t=1.0, n_classes=10, k=1)
    assert p[0] == 5 and c[0] == pytest.approx(math.exp(0.9) / (math.exp(0.9) + 9))
    # exact tie between classes 7 and 5 -> smallest id (reference: argmax over sorted unique labels)
    p, _ = M.knn_classify(np.array([[0.8, 0.8, 0.1]]), np.array([[7, 5, 3]]), t=5.0, n_classes=3)
    assert p[0] == 5
    # huge t does not overflow
    p, c = M.knn_classify(np.array([[0.99, 0.5]]), np.array([[1, 2]]), t=5000.0, n_classes=4)
    assert p[0] == 1 and c[0] == pytest.approx(1.0) and np.isfinite(c).all()
    with pytest.raises(ValueError, match="descending"):
        M.knn_classify(np.array([[0.1, 0.9]]), np.array([[1, 2]]), t=1.0, n_classes=2)


@pytest.mark.parametrize("t", [0.01, 1.0, 25.0, 500.0])
def test_knn_classify_matches_reference_loop(t):
    rng = np.random.default_rng(3)
    nq, k, n = 200, 10, 12
    sims = -np.sort(-rng.uniform(0.05, 1.0, (nq, k)), axis=1)   # positive sims, as the reference's init of 0 assumes
    labels = rng.integers(0, n, (nq, k))
    p, c = M.knn_classify(sims, labels, t, n)
    rp, rc = reference_met_knn(sims, labels, t, n)
    np.testing.assert_array_equal(p, rp)
    np.testing.assert_allclose(c, rc, rtol=1e-9)


def test_tune_knn_picks_best_of_grid():
    rng = np.random.default_rng(0)
    nq, n = 300, 6
    truth = rng.integers(0, n, nq)
    labels = rng.integers(0, n, (nq, 10))
    sims = -np.sort(-rng.uniform(0.2, 1.0, (nq, 10)), axis=1)
    labels[:150, 0] = truth[:150]      # half the queries have the right class first
    truth[:20] = -1                    # some distractors
    res = M.tune_knn(sims, labels, truth, n_classes=n, ks=(1, 3, 5), ts=(0.1, 10.0))
    assert set(res.table) == {(k, t) for k in (1, 3, 5) for t in (0.1, 10.0)}
    for (k, t), score in res.table.items():  # each entry is the GAP of that (K, t)
        p, c = M.knn_classify(sims, labels, t, n, k=k)
        assert score == pytest.approx(M.gap(p, c, truth))
    assert res.score == max(res.table.values())
    assert res.table[(res.k, res.t)] == res.score
    with pytest.raises(ValueError, match="neighbours"):
        M.tune_knn(sims, labels, truth, n_classes=n, ks=(50,), ts=(1.0,))


# ----------------------------------------------------------------------------------------------------
# AmsterTime
# ----------------------------------------------------------------------------------------------------


def test_amstertime_by_hand():
    labels = np.array(["a", "b", "c"])
    # old -> new: query a finds a first (AP 1), b finds b at rank 3 (AP 1/3), c first (AP 1)
    old_new = np.array([[0, 1, 2], [0, 2, 1], [2, 0, 1]])
    # new -> old: a at rank 2 (AP 1/2), b first, c at rank 2 (AP 1/2)
    new_old = np.array([[1, 0, 2], [1, 0, 2], [0, 2, 1]])
    out = M.evaluate_amstertime(old_new, new_old, labels, labels)
    assert out["mAP.old2new"] == pytest.approx(7 / 9)
    assert out["top1.old2new"] == pytest.approx(2 / 3)
    assert out["top5.old2new"] == pytest.approx(1.0)
    assert out["mAP.new2old"] == pytest.approx(2 / 3)
    assert out["top1.new2old"] == pytest.approx(1 / 3)
    assert out["mAP"] == pytest.approx((7 / 9 + 2 / 3) / 2)
    assert out["top1"] == pytest.approx(1 / 2)
    # The reference script with its default --k 1 would report "mAP" = top-1 = 2/3 for old2new.


def test_ranking_ap_multi_relevant_and_missing():
    # two relevant items (label x) at ranks 1 and 3: AP = (1/1 + 2/3) / 2 = 5/6
    ap, hits, nrel = M.ranking_ap_topk(np.array([[0, 1, 2, 3]]), ["x"], ["x", "y", "x", "z"], ks=(1, 2))
    assert ap[0] == pytest.approx(5 / 6) and nrel[0] == 2
    np.testing.assert_array_equal(hits[0], [1, 1])
    ap, hits, nrel = M.ranking_ap_topk(np.array([[0, 1]]), ["q"], ["x", "y"], ks=(1,))
    assert ap[0] == 0 and hits[0, 0] == 0 and nrel[0] == 0
