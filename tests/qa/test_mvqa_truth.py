"""Multi-view VQA (stage 2) answers against the world's geometry: relative pose and motion direction, which view
sees an object, depth order in the second view. The generator reads the world in ScanNet's format; the truth is
the world's own poses, object lists, depth and instance maps (``verify_mvqa_answers`` reads the answer text)."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from encoders.spatialboost.qa import QAOptions
from encoders.spatialboost.qa.dataset import Generator
from encoders.spatialboost.qa.multiview import truth_motion, verify_mvqa_answers

from .conftest import world_view


def _pose(yaw_deg: float, centre) -> np.ndarray:
    """OpenCV camera (x right, y down, z forward) turned by ``yaw_deg`` to the right about the down axis."""
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, centre
    return T


def test_truth_motion_on_known_pairs():
    base = _pose(0, [0, 0, 0])
    t, yaw = truth_motion(base, _pose(90, [1.0, 0, 0]))           # 1 m to the right, turned 90 deg right
    assert np.allclose(t, [1, 0, 0]) and yaw == pytest.approx(90)
    t, yaw = truth_motion(_pose(90, [0, 0, 0]), _pose(60, [0, -0.5, 2.0]))
    # camera 1 looks along world +x: world +z (2 m) is to its left, -y is up; turned back 30 deg to the left
    assert np.allclose(t, [-2.0, -0.5, 0.0]) and yaw == pytest.approx(-30)


@pytest.fixture(scope="module")
def mvqa(qa_scannet):
    gen = Generator(qa_scannet, QAOptions(task="mvqa", metric="pose"))
    return list(gen), sorted(gen.vocabulary)


def test_mvqa_answers_match_the_world(mvqa, qa_world):
    recs, voc = mvqa
    assert len(recs) >= 20
    fams = collections.Counter()
    for r in recs:
        v1, v2 = (world_view(qa_world, k) for k in r["meta"]["source_views"])
        assert verify_mvqa_answers(r, v1, v2, voc) == [], r["id"]
        fams.update(t["family"] for t in r["meta"]["turns"])
    # every question family was checked at least once
    assert set(fams) == {"common_motion", "common_objects", "choice_only_second", "choice_closest",
                         "adversarial_other_view", "adversarial_absent"}, fams


def _swap(text: str, a: str, b: str) -> str:
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


def test_wrong_answers_are_caught(mvqa, qa_world):
    """The check can fail: mirrored motions, another option letter, a visible object called absent."""
    recs, voc = mvqa
    caught = collections.Counter()
    for r in recs:
        v1, v2 = (world_view(qa_world, k) for k in r["meta"]["source_views"])
        for k, t in enumerate(r["meta"]["turns"]):
            conv = [dict(m) for m in r["conversations"]]
            a = conv[2 * k + 1]["value"]
            if t["family"] == "common_motion" and ("to the right" in a or "to the left" in a):
                conv[2 * k + 1]["value"] = _swap(a, "right", "left")
            elif t["family"].startswith("choice"):
                conv[2 * k + 1]["value"] = "ABCD"[("ABCD".index(a[0]) + 1) % 4] + a[1:]
            elif t["family"] == "adversarial_absent" and v2.objects:
                seen = sorted({o.category for o in v2.objects if o.pixels >= 30})
                if not seen:
                    continue
                conv[2 * k + 1]["value"] = f"There is no {seen[0]} in either image, so the question cannot be answered."
            else:
                continue
            bad = {**r, "conversations": conv}
            assert verify_mvqa_answers(bad, v1, v2, voc), (r["id"], t["family"], conv[2 * k + 1]["value"])
            caught[t["family"].split("_")[0]] += 1
    assert caught["common"] and caught["choice"] and caught["adversarial"]
