"""Per-sample statistics: reducers against independent computations, files round-trip safely."""
import numpy as np
import pytest

from harness.samples import PerSample, SamplesError, check_consistent


def test_mean_and_ratio_reducers():
    ps = PerSample(["a", "b", "c"], [1.0, 2.0, 6.0])
    assert ps.value() == pytest.approx(3.0)
    assert ps.value(np.array([2, 2, 0])) == pytest.approx((6 + 6 + 1) / 3)
    r = PerSample(["a", "b"], [[3, 4], [1, 6]], reduce="ratio", scale=100)
    assert r.value() == pytest.approx(40.0)


def test_miou_reducer_matches_confusion_computation():
    rng = np.random.default_rng(0)
    c, n = 4, 5
    labels = [rng.integers(0, c, 50) for _ in range(n)]
    preds = [np.where(rng.random(50) < 0.6, lab, rng.integers(0, c, 50)) for lab in labels]
    rows = []
    for lab, pr in zip(labels, preds):
        inter = [np.sum((lab == k) & (pr == k)) for k in range(c)]
        union = [np.sum((lab == k) | (pr == k)) for k in range(c)]
        rows.append(inter + union)
    ps = PerSample([str(i) for i in range(n)], rows, reduce="miou", scale=100)
    lab, pr = np.concatenate(labels), np.concatenate(preds)
    conf = np.zeros((c, c))
    np.add.at(conf, (lab, pr), 1)
    iou = np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf))
    assert ps.value() == pytest.approx(100 * iou.mean())


def test_gap_reducer_known_value():
    # sorted by confidence: correct, wrong, correct; M = 3 counted queries (one distractor row not counted)
    rows = [[0.9, 1, 1], [0.8, 0, 1], [0.7, 1, 1], [0.1, 0, 0]]
    ps = PerSample(list("abcd"), rows, reduce="gap")
    assert ps.value() == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_roundtrip_and_alignment(tmp_path):
    ps = PerSample(["x", "y"], [[1, 2], [3, 4]], reduce="ratio", columns=("num", "den"), meta={"k": 1})
    back = PerSample.load(ps.save(tmp_path / "m.npz"))
    assert back.ids == ["x", "y"] and back.columns == ("num", "den") and back.meta == {"k": 1}
    np.testing.assert_array_equal(back.stats, ps.stats)
    assert back.aligned(["y", "x"]).stats[0].tolist() == [3, 4]
    with pytest.raises(SamplesError, match="missing"):
        back.aligned(["z"])


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(SamplesError, match="occurs more than once"):
        PerSample(["a", "a"], [1, 2])
    with pytest.raises(SamplesError, match="do not match"):
        PerSample(["a"], [1, 2])
    with pytest.raises(SamplesError, match="unknown reducer"):
        PerSample(["a"], [1], reduce="median")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SamplesError, match="bad.npz"):
        PerSample.load(bad)
    with pytest.raises(SamplesError, match="reported"):
        check_consistent("lin.rmse", 2.0, PerSample(["a"], [1.0]))
