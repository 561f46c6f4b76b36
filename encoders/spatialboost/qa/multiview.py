"""View pairs by perceptual distance (App. C, Eq. 2) and their extension to 4 / 8 views (App. D).

The paper keeps pairs with ``0.35 <= LPIPS <= 0.65``. LPIPS needs pretrained AlexNet/VGG weights
(torchvision downloads them); when the ``lpips`` package *and* its backbone weights are already
on the machine, ``metric="lpips"`` (and ``auto``) uses it. Otherwise ``auto`` falls back to
``ssim`` = 1 - SSIM of 64x64 grey images (scikit-image), whose window is recalibrated (see
options.DEFAULT_WINDOWS and the README). ``pose`` is a geometric alternative (rotation angle +
baseline, needs poses). Any callable ``(rgb1, rgb2) -> float`` can be plugged in.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from .options import DEFAULT_WINDOWS

__all__ = ["PerceptualMetric", "lpips_available", "make_metric", "select_pairs", "extend_views", "ssim_distance",
           "truth_motion", "verify_mvqa_answers"]

PerceptualMetric = Callable[[np.ndarray, np.ndarray], float]


def _gray64(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).convert("L").resize((64, 64), Image.BILINEAR),
                      np.float64) / 255.0


def ssim_distance(rgb1: np.ndarray, rgb2: np.ndarray) -> float:
    """1 - SSIM on 64x64 grey versions (skimage ``structural_similarity``), in [0, 2] (≈[0, 1])."""
    from skimage.metrics import structural_similarity

    return float(1.0 - structural_similarity(_gray64(rgb1), _gray64(rgb2), data_range=1.0))


def lpips_available() -> bool:
    """True when ``lpips`` imports and its AlexNet backbone weights are cached (no download)."""
    try:
        import importlib.util
        import os

        import torch

        if importlib.util.find_spec("lpips") is None:
            return False
        ck = os.path.join(torch.hub.get_dir(), "checkpoints")
        return os.path.isdir(ck) and any(f.startswith("alexnet") for f in os.listdir(ck))
    except Exception:  # noqa: BLE001
        return False


class _LPIPS:
    def __init__(self):
        import lpips  # type: ignore

        self.net = lpips.LPIPS(net="alex", verbose=False).eval()

    def __call__(self, a, b) -> float:
        import torch

        def t(x):
            return torch.from_numpy(np.asarray(x, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

        with torch.no_grad():
            return float(self.net(t(a), t(b)).item())


def make_metric(name: str) -> tuple[str, PerceptualMetric | None, tuple[float, float]]:
    """-> (resolved name, image metric or None for 'pose', default window)."""
    if name == "auto":
        name = "lpips" if lpips_available() else "ssim"
    if name == "lpips":
        if not lpips_available():
            raise ValueError("metric 'lpips' needs the lpips package and cached AlexNet weights "
                             "(torch hub checkpoints); use metric='ssim' or 'pose' instead")
        return name, _LPIPS(), DEFAULT_WINDOWS["lpips"]
    if name == "ssim":
        return name, ssim_distance, DEFAULT_WINDOWS["ssim"]
    if name == "pose":
        return name, None, DEFAULT_WINDOWS["pose"]
    raise ValueError(f"unknown perceptual metric {name!r}")


def select_pairs(keys: list[str], distance: Callable[[int, int], float], window: tuple[float, float]):
    """All pairs (i < j) with ``window[0] <= d <= window[1]``; returns ([(i, j, d)], all distances)."""
    lo, hi = window
    pairs, alld = [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            d = float(distance(i, j))
            alld.append(d)
            if lo <= d <= hi:
                pairs.append((i, j, d))
    return pairs, alld


def extend_views(pair: tuple[int, int], n_views: int, candidates: list[int], poses: list, visible: list[set],
                 required: set) -> list[int] | None:
    """Extend an anchor pair to ``n_views``: add the views whose camera centres lie closest to the
    segment between the anchors ("interpolated" views), and accept them when the objects the QA
    is about (``required``) are visible in more than half of the added views (the paper checks
    the anchor QA against the new views with GPT-4o). None when it cannot be done."""
    i, j = pair
    need = n_views - 2
    rest = [c for c in candidates if c not in (i, j)]
    if len(rest) < need:
        return None
    a, b = poses[i][:3, 3], poses[j][:3, 3]
    ab = b - a

    def seg_dist(c):
        p = poses[c][:3, 3]
        t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        return float(np.linalg.norm(p - (a + t * ab)))

    add = sorted(rest, key=lambda c: (seg_dist(c), c))[:need]
    ok = sum(1 for c in add if required <= visible[c])
    if ok * 2 <= len(add):
        return None
    return [i, j] + add


# ------------------------------------------------------------------ answers vs. the world's geometry
_MOVE = re.compile(r"(\d+(?:\.\d+)?) (cm|m) (to the right|to the left|forward|backward|up|down)")
_TURN = re.compile(r"turned about (\d+) degrees to the (right|left)")


_ROUND = 0.0051        # lengths are printed to 1 cm (cm) or 0.01 m (m): rounding error <= 0.5 cm


def truth_motion(c2w1: np.ndarray, c2w2: np.ndarray) -> tuple[np.ndarray, float]:
    """Camera 2's centre in camera 1's frame (OpenCV: x right, y down, z forward) and the yaw (degrees, + =
    right) of camera 2's optical axis seen from camera 1, computed with plain numpy from the two poses."""
    R1, c1, R2, c2 = c2w1[:3, :3], c2w1[:3, 3], c2w2[:3, :3], c2w2[:3, 3]
    t = R1.T @ (c2 - c1)
    f = R1.T @ R2[:, 2]
    return t, float(np.degrees(np.arctan2(f[0], f[2])))


def _visible(view, min_pixels: int) -> dict[str, list]:
    out: dict[str, list] = {}
    for o in view.objects:
        if o.pixels >= min_pixels:
            out.setdefault(o.category, []).append(o)
    return out


def _names(listed: str) -> set[str]:
    """``"chair, box and lamp"`` -> the names (as the generator's ``_list`` joins them)."""
    return {x.strip() for x in re.split(r", | and ", listed) if x.strip()}


def verify_mvqa_answers(rec: dict, v1, v2, vocabulary, min_pixels: int = 30) -> list[str]:
    """Check a generated two-view record's answers against the world's ground truth views ``v1``/``v2``
    (``suites.synthetic.views.View``: poses, per-view object annotations, depth and instance maps), reading
    the answer *text* (not the generator's metadata). Returns the disagreements (empty = all correct).

    relative pose / motion direction: each stated move (right/left, forward/backward, up/down, >= 5 cm) has the
    sign and size (to the printed rounding) of camera 2's centre in camera 1's frame, and the unstated ones are
    below 5 cm; the turn's side and angle match the yaw. Which view sees an object: objects "in both" / "only in
    the first" / "only in the second" / "in neither" against the views' object lists (>= ``min_pixels``
    pixels). Depth order: the "smallest depth in the second image" choice is the category whose nearest
    visible surface (median depth over its instance mask) is the closest, and every other visible option is
    further."""
    errs: list[str] = []
    vis1, vis2 = _visible(v1, min_pixels), _visible(v2, min_pixels)
    conv = rec["conversations"]
    fams = [t["family"] for t in rec["meta"]["turns"]]
    for k, fam in enumerate(fams):
        q, a = conv[2 * k]["value"], conv[2 * k + 1]["value"]
        if fam == "common_motion":
            t, yaw = truth_motion(v1.cam_to_world, v2.cam_to_world)
            axis = {"to the right": (0, 1), "to the left": (0, -1), "down": (1, 1), "up": (1, -1),
                    "forward": (2, 1), "backward": (2, -1)}
            said = set()
            for num, unit, d in _MOVE.findall(a):
                i, sign = axis[d]
                said.add(i)
                val = float(num) / (100 if unit == "cm" else 1)
                if np.sign(t[i]) != sign or abs(abs(t[i]) - val) > _ROUND:
                    errs.append(f"motion '{num} {unit} {d}' but camera 2 is at {t[i]:+.3f} m on axis {i}")
            for i in set(range(3)) - said:
                if abs(t[i]) >= 0.05 + 1e-6:
                    errs.append(f"motion: axis {i} ({t[i]:+.3f} m) not mentioned")
            m = _TURN.search(a)
            if m:
                if (1 if m.group(2) == "right" else -1) != np.sign(yaw) or abs(abs(yaw) - int(m.group(1))) > 0.51:
                    errs.append(f"turn '{m.group(0)}' but yaw is {yaw:+.2f} deg")
            elif abs(yaw) >= 5 + 1e-6:
                errs.append(f"no turn stated but yaw is {yaw:+.2f} deg")
        elif fam == "common_objects":
            m = re.match(r"Both images show the (.+?)\.", a)
            both = _names(m.group(1)) if m else set()
            if not m and not a.startswith("No object is visible in both images."):
                errs.append(f"common objects answer not understood: '{a}'")
            # a category seen in both views is "in both" when one of its instances is (instance-level truth)
            inst_both = {o.category for o in v1.objects if o.pixels >= min_pixels
                         and any(p.instance_id == o.instance_id and p.pixels >= min_pixels for p in v2.objects)}
            if both != inst_both:
                errs.append(f"'in both' {sorted(both)} but the views share {sorted(inst_both)}")
            m = re.search(r"The (.+?) can only be seen in the first image\.", a)
            if m:
                only1 = _names(m.group(1))
                if only1 != set(vis1) - set(vis2):
                    errs.append(f"'only in the first' {sorted(only1)} but truth {sorted(set(vis1) - set(vis2))}")
            elif set(vis1) - set(vis2):
                errs.append(f"'only in the first' not stated: {sorted(set(vis1) - set(vis2))}")
        elif fam in ("choice_only_second", "choice_closest"):
            opts = dict(re.findall(r"([ABCD])\. the (.+?)(?= [ABCD]\. the |$)", q))
            ans = opts.get(a[:1])
            if ans is None:
                errs.append(f"answer '{a}' is not one of the options {opts}")
                continue
            if fam == "choice_only_second":
                ok = [c for c in opts.values() if c in vis2 and c not in vis1]
                if ok != [ans]:
                    errs.append(f"only-in-second answer '{ans}', truth among the options: {ok}")
            else:
                near = {c: min(float(np.median(v2.depth[(v2.instance == o.instance_id) & (v2.depth > 0)]))
                               for o in objs) for c, objs in vis2.items()}
                if ans not in near:
                    errs.append(f"closest answer '{ans}' is not visible in the second view")
                    continue
                if min(near, key=near.get) != ans:
                    errs.append(f"closest answer '{ans}' ({near[ans]:.2f} m) but {min(near, key=near.get)} is at "
                                f"{min(near.values()):.2f} m")
                for c in opts.values():
                    if c != ans and c in near and near[c] <= near[ans]:
                        errs.append(f"option '{c}' ({near[c]:.2f} m) is not further than '{ans}'")
        elif fam == "adversarial_other_view":
            c = rec["meta"]["turns"][k]["values"]["object"]
            if f"The {c} is not visible in the second image" not in a or c not in vis1 or c in vis2:
                errs.append(f"'{c}' only in the first image: truth first={c in vis1}, second={c in vis2}")
        elif fam == "adversarial_absent":
            c = next((c for c in vocabulary if f"There is no {c} in either" in a), None)
            if c is None or c in vis1 or c in vis2:
                errs.append(f"'{a}' but the category is visible (first={c in vis1}, second={c in vis2})")
        else:
            errs.append(f"unknown family {fam}")
    return errs
