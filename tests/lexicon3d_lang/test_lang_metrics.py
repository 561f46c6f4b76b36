"""Grounding accuracy (oracle / random heads, IoU), box pooling, EM@1 and the caption metrics against
hand computations and pycocoevalcap."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from heads.grounding import GroundingHead
from suites.lexicon3d.grounding import score
from suites.lexicon3d.language.annotations import Referral
from suites.lexicon3d.language.metrics import caption_scores, exact_match, normalise
from suites.lexicon3d.language.scenes import SceneObjects, box_iou, pool_objects


def _scenes(rng, n_scenes=40):
    """Scenes of 3..9 disjoint unit boxes on a line; some classes repeat (multiple), some do not."""
    objects, recs, items = {}, [], []
    for s in range(n_scenes):
        m = int(rng.integers(3, 10))
        names = [f"c{int(rng.integers(0, 4))}" for _ in range(m)]
        boxes = np.array([[2.0 * i, 0, 0, 2.0 * i + 1, 1, 1] for i in range(m)])
        name = f"scene{s:04d}_00"
        objects[name] = SceneObjects(name, np.arange(m), names, boxes, np.full(m, 10))
        for k in range(m):
            recs.append(Referral(f"{name}/{k}/0", name, k, names[k], "x"))
            items.append((name, k, 0))
    return objects, recs, items


def test_box_iou_by_hand():
    a = np.array([0, 0, 0, 2, 2, 2.0])
    b = np.array([1, 1, 1, 3, 3, 3.0])
    assert box_iou(a, b) == pytest.approx(1 / 15)          # 1 / (8 + 8 - 1)
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, a + np.array([5, 0, 0, 5, 0, 0])) == 0.0


def test_oracle_head_scores_100_and_random_head_1_over_objects():
    rng = np.random.default_rng(0)
    objects, recs, items = _scenes(rng)
    oracle = np.array([k for _, k, _ in items])
    m, ps = score(recs, items, oracle, objects)
    for k in ("acc25", "acc50", "unique.acc50", "multiple.acc50", "unique.acc25", "multiple.acc25"):
        assert m[k] == 100.0
        assert ps[k].value() == pytest.approx(100.0)
    expected = 100.0 * np.mean([1.0 / len(objects[s].ids) for s, _, _ in items])
    assert m["floor.acc50"] == pytest.approx(expected)          # disjoint boxes: floor = E[1 / #objects]
    # an untrained fusion head on random features: chance level, ~ E[1/#objects]
    torch.manual_seed(0)
    head = GroundingHead(16, 8, 6, d=32, layers=2, heads=2, ffn=64).eval()
    Ms = [len(objects[s].ids) for s, _, _ in items]
    mask = torch.arange(max(Ms))[None] < torch.tensor(Ms)[:, None]          # scenes padded to 9 objects
    accs = []
    with torch.no_grad():
        for rep in range(8):
            n = len(items)
            logits = head(torch.randn(n, max(Ms), 16), mask, torch.randn(n, max(Ms), 6), torch.randn(n, 5, 8),
                          torch.ones(n, 5, dtype=torch.bool))
            pred = logits.argmax(1).numpy()
            assert (pred < np.array(Ms)).all()                                 # never a padding slot
            accs.append(score(recs, items, pred, objects)[0]["acc50"])
    assert abs(np.mean(accs) - expected) < 3.0, (np.mean(accs), expected)


def test_unique_multiple_split():
    objects = {"s": SceneObjects("s", np.arange(3), ["chair", "chair", "table"],
                                 np.array([[0, 0, 0, 1, 1, 1], [2, 0, 0, 3, 1, 1], [4, 0, 0, 5, 1, 1.0]]), np.ones(3))}
    recs = [Referral(f"s/{k}/0", "s", k, "", "") for k in range(3)]
    items = [("s", k, 0) for k in range(3)]
    m, ps = score(recs, items, np.array([1, 1, 2]), objects)   # wrong, right (chairs), right (table)
    assert m["multiple.acc50"] == 50.0 and m["unique.acc50"] == 100.0
    assert m["acc50"] == pytest.approx(200 / 3)
    assert ps["unique.acc50"].ids == ["s/2/0"]


def test_pool_objects_mean_inside_box_of_seen_points():
    coords = np.array([[0.5, 0.5, 0.5], [0.6, 0.5, 0.5], [0.7, 0.5, 0.5], [5, 5, 5.0]])
    feats = np.array([[1.0, 0], [3.0, 0], [100.0, 0], [7.0, 1]], np.float32)
    seen = np.array([True, True, False, True])
    f, n = pool_objects(coords, feats, seen, np.array([[0, 0, 0, 1, 1, 1], [4, 4, 4, 6, 6, 6], [9, 9, 9, 10, 10, 10.0]]))
    assert n.tolist() == [2, 1, 0]
    np.testing.assert_allclose(f, [[2.0, 0], [7.0, 1], [0, 0]])


def _bleu1_by_hand(preds, refs):
    """Corpus BLEU-1 as Papineni et al.: clipped unigram matches / hypothesis length, times the brevity
    penalty with the closest reference length (pycocoevalcap's 'closest')."""
    match = hyp = ref = 0
    for p, rs in zip(preds, refs):
        ph = p.split()
        c = Counter(ph)
        best = Counter()
        for r in rs:
            for w, n in Counter(r.split()).items():
                best[w] = max(best[w], n)
        match += sum(min(n, best[w]) for w, n in c.items())
        hyp += len(ph)
        ref += min((abs(len(r.split()) - len(ph)), len(r.split())) for r in rs)[1]
    bp = 1.0 if hyp > ref else math.exp(1 - ref / hyp)
    return 100.0 * bp * match / hyp


@pytest.mark.parametrize("preds,refs", [
    (["a red chair", "two", "the table"], [["red chair", "chair"], ["two"], ["a lamp"]]),
    (["chair", "brown", "on the left side"], [["the red chair"], ["brown"], ["left", "to the left"]]),
])
def test_bleu1_and_em_by_hand(preds, refs):
    s, per, missing = caption_scores(preds, refs, meteor=False)
    assert s["bleu1"] == pytest.approx(_bleu1_by_hand(preds, refs), abs=1e-4)
    assert missing == {"meteor": "disabled (protocol.meteor=false)"}
    for m in ("rouge_l", "cider"):
        stats, reduce = per[m]
        assert reduce == "mean" and s[m] == pytest.approx(stats[:, 0].mean())
    from harness.samples import REDUCERS
    for n in (1, 2, 3, 4):               # per-sentence counts add up to the corpus BLEU-n
        stats, reduce = per[f"bleu{n}"]
        assert reduce == f"bleu{n}" and 100 * REDUCERS[reduce](stats) == pytest.approx(s[f"bleu{n}"], rel=1e-9)
    assert 100 * REDUCERS["bleu1"](per["bleu1"][0]) == pytest.approx(_bleu1_by_hand(preds, refs), abs=1e-4)


def test_bleu_rows_rescore_any_subset_like_pycocoevalcap():
    """What the bootstrap does: the rows of a subset of sentences reduce to pycocoevalcap's BLEU of that subset
    (brevity penalty included: the subset's hypotheses are shorter than their references)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from harness.samples import REDUCERS
    preds = ["a red chair on the left", "two", "the table", "lamp", "the big brown sofa near the wall"]
    refs = [["red chair", "the chair on the left"], ["two"], ["a lamp"], ["the lamp"], ["brown sofa", "a sofa"]]
    _, per, _ = caption_scores(preds, refs, meteor=False)
    for subset in ([0, 1], [1, 2, 3], [0, 0, 4], [3]):
        gts = {k: [r for r in refs[i]] for k, i in enumerate(subset)}
        res = {k: [preds[i].lower()] for k, i in enumerate(subset)}
        b, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n in (1, 2, 3, 4):
            stats, reduce = per[f"bleu{n}"]
            assert REDUCERS[reduce](stats[subset]) == pytest.approx(b[n - 1], rel=1e-9, abs=1e-12)


def test_against_pycocoevalcap_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    preds, refs = ["A red chair.", "Two"], [["red chair"], ["two", "2"]]
    s, _, _ = caption_scores(preds, refs, meteor=False)
    gts, res = {0: ["red chair"], 1: ["two", "2"]}, {0: ["a red chair"], 1: ["two"]}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [s[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx([100 * x for x in b])
    assert s["rouge_l"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])


def test_exact_match_normalisation():
    assert normalise("  The Red-Chair. ") == "the red chair"
    assert exact_match("Two.", ["two"]) == 1.0 and exact_match("two chairs", ["two"]) == 0.0
    assert exact_match("brown", ["red", "Brown"]) == 1.0
    assert exact_match("2", ["two"]) == 1.0 and normalise("21 chairs") == "21 chairs"


def test_meteor_missing_without_java(monkeypatch):
    import suites.lexicon3d.language.metrics as M
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    s, _, missing = caption_scores(["a"], [["a"]], meteor=True)
    assert "meteor" not in s and "Java" in missing["meteor"]


@pytest.mark.slow
def test_meteor_through_java():
    s, _, missing = caption_scores(["red chair", "two"], [["red chair"], ["three"]], meteor=True)
    assert not missing and 0 < s["meteor"] < 100


def test_pool_instances_uses_the_objects_own_seen_points():
    from suites.lexicon3d.language.scenes import pool_instances
    feats = np.array([[1.0], [3.0], [100.0], [7.0], [9.0]], np.float32)
    inst = np.array([1, 1, 1, 3, 0])                  # object id k has instance id k + 1; 0 = no object
    seen = np.array([True, True, False, True, True])
    f, n = pool_instances(feats, seen, inst, np.array([0, 1, 2]))
    assert n.tolist() == [2, 0, 1]
    np.testing.assert_allclose(f[:, 0], [2.0, 0.0, 7.0])
