"""Sample builders: the 12-turn spatial chain of thought (stage 3) and the multi-view VQA (stage 2).

Every answer is computed from the geometry it states: depths from the depth map, centres and
sizes from the canonical boxes, predicates from the camera-frame / canonical box centres,
distances from the box centres. Each turn also carries machine-readable ``meta`` (the exact
numbers behind the text) that the tests check the text against.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import geometry as G
from . import templates as T
from .options import QAOptions
from .scene import SceneObject, ViewGeometry

__all__ = ["SceneContext", "Skip", "TemplateCaptioner", "build_caption_sample", "build_cot_sample", "build_mvqa_sample",
           "Turn",
           "to_llava", "ORDINALS"]

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
DEPTH_MARGIN = 0.05  # m: point comparisons only between points at least this far apart in depth
PRED_MARGIN = 0.05  # m: predicates prefer axes where the two centres differ by at least this


class Skip(Exception):
    """A sample cannot be made; ``reason`` goes into the dataset card."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Turn:
    level: str  # pix | obj | scene | caption | mvqa
    family: str
    q: str
    a: str
    meta: dict = field(default_factory=dict)


@dataclass
class SceneContext:
    """What a sample is built from: the anchor view (pixel level) and the objects in the anchor's
    canonical frame (object / scene level), plus the image list."""

    anchor: ViewGeometry
    objects: list[SceneObject]
    images: list[str]
    floor_found: bool
    sizes: list[tuple] = None  # (H, W) per image

    @property
    def multiview(self) -> bool:
        return len(self.images) > 1


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _choice(rng, seq):
    return seq[int(rng.integers(len(seq)))]


# ----------------------------------------------------------------------------- naming
class _Namer:
    def __init__(self, ctx: SceneContext):
        self.ctx = ctx
        self.counts = Counter(o.category for o in ctx.objects)

    def region(self, o: SceneObject) -> str:
        H, W = o.size_hw
        x1, y1, x2, y2 = o.bbox2d
        r = f"[{x1 / W:.2f}, {y1 / H:.2f}, {x2 / W:.2f}, {y2 / H:.2f}]"
        if self.ctx.multiview:
            r += f" of the {ORDINALS[o.view]} image"
        return r

    def short(self, o: SceneObject) -> str:
        """'chair' or, when the category is ambiguous in this sample, 'chair at [..]'."""
        if self.counts[o.category] > 1:
            return f"{o.category} at {self.region(o)}"
        return o.category

    def full(self, o: SceneObject) -> str:
        return f"the {o.category} in region {self.region(o)}"


def _point_str(u, v, size, fmt) -> str:
    H, W = size
    if fmt == "pixel":
        return f"({int(u)}, {int(v)})"
    return f"({(u + 0.5) / W:.3f}, {(v + 0.5) / H:.3f})"


# ----------------------------------------------------------------------------- captions
class TemplateCaptioner:
    """Two caption turns from the scene graph (stands in for the paper's GPT-4o captions)."""

    def caption(self, ctx: SceneContext, rng) -> list[tuple[str, str]]:
        objs = ctx.objects
        cnt = Counter(o.category for o in objs)
        words = ["", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

        def np_(c, n):
            if n == 1:
                return f"{'an' if c[0] in 'aeiou' else 'a'} {c}"
            return f"{words[n] if n < len(words) else n} {c}{'es' if c.endswith(('s', 'sh', 'ch', 'x')) else 's'}"

        items = [np_(c, n) for c, n in sorted(cnt.items())]
        lst = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        view = "views" if ctx.multiview else "image"
        short = f"The {view} show{'' if ctx.multiview else 's'} {lst}."
        nm = _Namer(ctx)
        by_depth = sorted(objs, key=lambda o: o.center_cam[2])[:4]
        first = by_depth[0]
        parts = [f"Nearest in depth is the {nm.short(first)}, at a depth of about {T.fmt_len(first.center_cam[2])}"]
        rest = [f"the {nm.short(o)} ({T.fmt_len(o.center_cam[2])})" for o in by_depth[1:]]
        if rest:
            parts[0] += ", followed by " + (rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + " and " + rest[-1])
        parts[0] += "."
        if len(by_depth) >= 2:
            a, b = by_depth[0], by_depth[1]
            side = "left" if a.center_cam[0] < b.center_cam[0] else "right"
            parts.append(f"The {nm.short(a)} is to the {side} of the {nm.short(b)}.")
        if ctx.floor_found:
            for o in by_depth[:3]:
                top = float(o.aabb["max"][1])
                parts.append(f"The visible top of the {nm.short(o)} is about {T.fmt_len(top)} above the floor.")
        return [(_choice(rng, T.CAPTION["short_q"]), short), (_choice(rng, T.CAPTION["detail_q"]), " ".join(parts))]


# ----------------------------------------------------------------------------- pixel level
def _pix_turns(ctx: SceneContext, A: SceneObject, B: SceneObject, rng, opt: QAOptions, mv_prefix: str) -> list[Turn]:
    g = ctx.anchor
    pools = []
    for o in (A, B):
        pools.append(o.uvz if o.uvz is not None and len(o.uvz) else g.uvz)
    others = [o.uvz for o in ctx.objects if o is not A and o is not B and o.uvz is not None and len(o.uvz)]
    pools.append(others[int(rng.integers(len(others)))] if others and rng.random() < 0.6 else g.uvz)

    def rng_of(p) -> float:
        """Euclidean distance camera centre -> the back-projected point (what "how far" asks)."""
        return float(np.linalg.norm(G.backproject_pixels(p[0], p[1], p[2], g.K)))

    def pick(pool, avoid=()):
        # a new point must differ in depth from the earlier ones by a clear margin, and depth order and
        # distance order must agree, so "closer to the viewer" is true under either reading
        idx = rng.permutation(len(pool))
        for i in idx:
            z = pool[i, 2]
            r = rng_of(pool[i])
            if all(abs(z - a) >= max(DEPTH_MARGIN, 0.03 * min(z, a)) and (z - a) * (r - ra) > 0 for a, ra in avoid):
                return pool[i]
        return None

    p1 = pick(pools[0])
    p2 = pick(pools[1], ((p1[2], rng_of(p1)),))
    if p2 is None:
        p2 = pick(g.uvz, ((p1[2], rng_of(p1)),))
    if p2 is None:
        raise Skip("no two query points with distinct depths")
    avoid = ((p1[2], rng_of(p1)), (p2[2], rng_of(p2)))
    p3 = pick(pools[2], avoid)
    if p3 is None:
        p3 = pick(g.uvz, avoid)
    if p3 is None:
        raise Skip("no three query points with distinct depths")
    pts = [p1, p2, p3]
    names = [_point_str(p[0], p[1], g.size, opt.point_format) for p in pts]

    def depth_turn(i):
        # "depth" questions are answered with z (the depth map); "how far" questions with the Euclidean
        # distance from the camera centre
        dist = rng.random() < 0.35
        family = "point_distance" if dist else "point_depth"
        fam = T.PIXEL[family]
        value = rng_of(pts[i]) if dist else float(pts[i][2])
        X = T.fmt_len(value)
        q = mv_prefix + _choice(rng, fam["q"]).format(A=names[i])
        a = _cap(_choice(rng, fam["a"]).format(A=names[i], X=X))
        return Turn("pix", family, q, a, {"point": [float(pts[i][0]), float(pts[i][1])], "depth": float(pts[i][2]),
                                          "distance": rng_of(pts[i]), "stated": T.rounded_len(value)})

    def compare_turn(i, j):
        if rng.random() < 0.5:
            i, j = j, i
        zi, zj = pts[i][2], pts[j][2]
        if rng.random() < 0.5:
            fam = T.PIXEL["point_closer"]
            truth = bool(zi < zj)
            q = mv_prefix + _choice(rng, fam["q"]).format(A=names[i], B=names[j])
            a = _choice(rng, fam["true" if truth else "false"]).format(A=names[i], B=names[j])
            return Turn("pix", "point_closer", q, a, {"a": names[i], "b": names[j], "za": float(zi), "zb": float(zj),
                                                      "truth": truth})
        fam = T.PIXEL["point_which_closer"]
        w, f = (i, j) if zi < zj else (j, i)
        q = mv_prefix + _choice(rng, fam["q"]).format(A=names[i], B=names[j])
        a = _choice(rng, fam["a"]).format(W=names[w], F=names[f], X=T.fmt_len(pts[w][2]), Y=T.fmt_len(pts[f][2]))
        return Turn("pix", "point_which_closer", q, a, {"closer": names[w], "farther": names[f],
                                                        "z_closer": float(pts[w][2]), "z_farther": float(pts[f][2])})

    return [depth_turn(0), depth_turn(1), compare_turn(0, 1), depth_turn(2), compare_turn(2, int(rng.integers(2)))]


# ----------------------------------------------------------------------------- object level
def _predicate(A: SceneObject, B: SceneObject, rng):
    d = {
        "x": float(A.center_cam[0] - B.center_cam[0]),  # camera right
        "y": float(A.center[1] - B.center[1]),  # canonical up
        "z": float(A.center_cam[2] - B.center_cam[2]),  # depth from the viewer
    }
    clear = [k for k, v in d.items() if abs(v) >= PRED_MARGIN]
    # "behind" / "farther from the viewer" must hold for depth (z) and for distance from the camera alike
    dr = float(np.linalg.norm(A.center_cam) - np.linalg.norm(B.center_cam))
    if "z" in clear and d["z"] * dr <= 0:
        clear.remove("z")
    axis = _choice(rng, clear) if clear else max(("x", "y"), key=lambda k: abs(d[k]))
    pred = _choice(rng, {"x": ("left", "right"), "y": ("above", "below"), "z": ("behind", "front")}[axis])
    return pred


def _pred_truth(pred: str, P: SceneObject, Q: SceneObject) -> bool:
    if pred == "left":
        return bool(P.center_cam[0] < Q.center_cam[0])
    if pred == "right":
        return bool(P.center_cam[0] > Q.center_cam[0])
    if pred == "above":
        return bool(P.center[1] > Q.center[1])
    if pred == "below":
        return bool(P.center[1] < Q.center[1])
    if pred == "behind":
        return bool(P.center_cam[2] > Q.center_cam[2])
    if pred == "front":
        return bool(P.center_cam[2] < Q.center_cam[2])
    raise ValueError(pred)


def _obj_turns(ctx, A, B, rng, nm: _Namer) -> list[Turn]:
    def center_turn(o):
        fam = T.OBJECT["cube_center"]
        q = _choice(rng, fam["q"]).format(A=nm.full(o))
        a = _cap(_choice(rng, fam["a"]).format(A="the " + nm.short(o), X=T.fmt_vec(o.center)))
        return Turn("obj", "cube_center", q, a, {"object": o.instance_id, "center": o.center.tolist()})

    def identify_turn():
        fam = T.OBJECT["cube_identify"]
        q = _choice(rng, fam["q"]).format(A=nm.full(A), B=nm.full(B))
        a = _cap(_choice(rng, fam["a"]).format(A="the " + nm.short(A), B="the " + nm.short(B), X=T.fmt_vec(A.center),
                                               Y=T.fmt_vec(B.center)))
        return Turn("obj", "cube_identify", q, a, {"objects": [A.instance_id, B.instance_id],
                                                   "centers": [A.center.tolist(), B.center.tolist()]})

    def extent_turn(o):
        fam = T.OBJECT["cube_extent"]
        s = np.asarray(o.obb["size"])  # (major horizontal, up, minor horizontal)
        wdh = (s[0], s[2], s[1])       # width (major horizontal), depth (minor horizontal), height
        q = _choice(rng, fam["q"]).format(A=nm.full(o))
        a = _cap(_choice(rng, fam["a"]).format(A="the " + nm.short(o), X=T.fmt_size(wdh)))
        return Turn("obj", "cube_extent", q, a, {"object": o.instance_id, "size_wdh": [float(x) for x in wdh]})

    def predicate_turn():
        pred = _predicate(A, B, rng)
        P, Q = (A, B) if rng.random() < 0.5 else (B, A)
        truth = _pred_truth(pred, P, Q)
        fam = T.OBJECT[pred]
        q = _choice(rng, fam["q"]).format(A=nm.short(P), B=nm.short(Q))
        a = _choice(rng, fam["true" if truth else "false"]).format(A=nm.short(P), B=nm.short(Q))
        return Turn("obj", pred, q, a, {"a": P.instance_id, "b": Q.instance_id, "truth": truth,
                                        "a_cam": P.center_cam.tolist(), "b_cam": Q.center_cam.tolist(),
                                        "a_up": float(P.center[1]), "b_up": float(Q.center[1])})

    if rng.random() < 0.5:
        turns = [center_turn(A), center_turn(B), extent_turn(A if rng.random() < 0.5 else B)]
    else:
        turns = [identify_turn(), extent_turn(A), extent_turn(B)]
    return turns + [predicate_turn()]


def _scene_turn(ctx, A, B, rng, nm, rationale: bool) -> Turn:
    fam = T.SCENE["distance"]
    dist = float(np.linalg.norm(A.center - B.center))
    X = T.fmt_len(dist)
    q = _choice(rng, fam["q"]).format(A=nm.short(A), B=nm.short(B))
    if rationale:
        a = _choice(rng, fam["rationale"]).format(A=nm.short(A), B=nm.short(B), X=X, CA=T.fmt_vec(A.center),
                                                  CB=T.fmt_vec(B.center))
    else:
        a = _choice(rng, fam["a"]).format(A=nm.short(A), B=nm.short(B), X=X)
    return Turn("scene", "distance", q, _cap(a), {"a": A.instance_id, "b": B.instance_id, "distance": dist,
                                                  "stated": T.rounded_len(dist)})


def build_cot_sample(ctx: SceneContext, opt: QAOptions, rng: np.random.Generator, captioner=None) -> list[Turn]:
    """The multi-turn chain of thought: 5 pixel, 4 object, 1 scene, 2 caption turns (levels and
    order per ``opt``). Raises :class:`Skip` when the context cannot support it."""
    objs = ctx.objects
    if len(objs) < 2:
        raise Skip("fewer than two objects")
    # pixel-level points come from the anchor: prefer objects visible there
    vis = [o for o in objs if o.uvz is not None and len(o.uvz)]
    cand = vis if len(vis) >= 2 else objs
    i, j = rng.choice(len(cand), 2, replace=False)
    A, B = cand[int(i)], cand[int(j)]
    nm = _Namer(ctx)
    mv_prefix = "In the first image: " if ctx.multiview else ""
    blocks = {}
    if "pix" in opt.levels:
        blocks["pix"] = _pix_turns(ctx, A, B, rng, opt, mv_prefix)
    if "obj" in opt.levels:
        blocks["obj"] = _obj_turns(ctx, A, B, rng, nm)
    if "scene" in opt.levels:
        rat = opt.rationale and opt.order == "forward" and "obj" in opt.levels
        blocks["scene"] = [_scene_turn(ctx, A, B, rng, nm, rat)]
    spatial = [t for lv in ("pix", "obj", "scene") if lv in blocks for t in blocks[lv]]
    if opt.order == "reverse":
        spatial = [t for lv in ("scene", "obj", "pix") if lv in blocks for t in blocks[lv]]
    elif opt.order == "random":
        spatial = [spatial[k] for k in rng.permutation(len(spatial))]
    turns = spatial
    if opt.captions:
        cap = captioner if captioner is not None else TemplateCaptioner()
        pairs = cap.caption(ctx, rng)
        if len(pairs) != 2:
            raise ValueError(f"captioner {type(cap).__name__} returned {len(pairs)} turns, expected 2")
        turns = turns + [Turn("caption", f"caption_{k}", q, a) for k, (q, a) in zip(("short", "detail"), pairs)]
    if ctx.multiview and turns:
        t0 = turns[0]
        turns[0] = Turn(t0.level, t0.family, "The first image is the reference view; directions and depths refer to "
                        "its camera. " + t0.q, t0.a, t0.meta)
    return turns


def build_caption_sample(ctx: SceneContext, rng: np.random.Generator, captioner=None) -> list[Turn]:
    """Stage-1 alignment data (LLaVA-Pretrain-558K style): one turn, an instruction and a caption of the image
    (the short object list or the detailed layout, chosen at random)."""
    if not ctx.objects:
        raise Skip("no object")
    cap = captioner if captioner is not None else TemplateCaptioner()
    pairs = cap.caption(ctx, rng)
    k = int(rng.integers(len(pairs)))
    q, a = pairs[k]
    return [Turn("caption", ("caption_short", "caption_detail")[min(k, 1)], q, a)]


# ----------------------------------------------------------------------------- multi-view VQA (stage 2)
def _list(names):
    names = list(names)
    if not names:
        return ""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def build_mvqa_sample(g1: ViewGeometry, g2: ViewGeometry, vocabulary, rng: np.random.Generator,
                      min_pixels: int = 30) -> list[Turn]:
    """Three turns (App. C): a common question (shared objects or camera motion), a multiple-choice
    question with four candidates and an adversarial (false-premise) question, all from geometry."""
    c1 = {o.instance_id: o.category for o in g1.objects if o.pixels >= min_pixels}
    c2 = {o.instance_id: o.category for o in g2.objects if o.pixels >= min_pixels}
    if not c1 or not c2:
        raise Skip("a view of the pair shows no object")
    cats1, cats2 = set(c1.values()), set(c2.values())
    turns = []
    # (1) common VQA
    both = sorted({c1[i] for i in set(c1) & set(c2)})
    if (g1.cam_to_world is not None and g2.cam_to_world is not None) and (rng.random() < 0.5 or not both):
        from .geometry import relative_pose

        rel = relative_pose(g1.cam_to_world, g2.cam_to_world)
        t = rel[:3, 3]
        f = rel[:3, 2]
        yaw = float(np.degrees(np.arctan2(f[0], f[2])))
        moves = []
        if abs(t[0]) >= 0.05:
            moves.append(f"{T.fmt_len(abs(t[0]))} to the {'right' if t[0] > 0 else 'left'}")
        if abs(t[2]) >= 0.05:
            moves.append(f"{T.fmt_len(abs(t[2]))} {'forward' if t[2] > 0 else 'backward'}")
        if abs(t[1]) >= 0.05:
            moves.append(f"{T.fmt_len(abs(t[1]))} {'down' if t[1] > 0 else 'up'}")
        a = ("The camera moved " + _list(moves) if moves else "The camera stayed in place")
        a += (f" and turned about {abs(yaw):.0f} degrees to the {'right' if yaw > 0 else 'left'}." if abs(yaw) >= 5
              else " without turning noticeably.")
        turns.append(Turn("mvqa", "common_motion", _choice(rng, T.MVQA["motion_q"]), a,
                          {"translation_cam1": t.tolist(), "yaw_deg": yaw}))
    else:
        q = _choice(rng, T.MVQA["common_q"])
        a = (f"Both images show the {_list(both)}." if both else "No object is visible in both images.")
        only1 = sorted(cats1 - cats2)
        if only1:
            a += f" The {_list(only1)} can only be seen in the first image."
        turns.append(Turn("mvqa", "common_objects", q, a, {"both": both}))
    # (2) multiple choice
    only2 = sorted(cats2 - cats1)
    absent = sorted(set(vocabulary) - cats1 - cats2)
    letters = "ABCD"
    if only2:
        correct = _choice(rng, only2)
        distract = [c for c in sorted(cats1) if c != correct] + absent
        q0 = _choice(rng, T.MVQA["choice_q"])
        fam = "choice_only_second"
    else:
        z2 = {o.category: float(np.median(o.uvz[:, 2])) for o in g2.objects if o.pixels >= min_pixels}
        correct = min(z2, key=z2.get)
        distract = [c for c in sorted(z2, key=z2.get)[1:] if abs(z2[c] - z2[correct]) >= 0.2] + absent
        q0 = _choice(rng, T.MVQA["closest_q"])
        fam = "choice_closest"
    distract = list(dict.fromkeys(distract))
    if len(distract) < 3:
        raise Skip("not enough distractors for a multiple-choice question")
    dsel = [distract[k] for k in rng.choice(len(distract), 3, replace=False)]
    opts = dsel + [correct]
    opts = [opts[k] for k in rng.permutation(4)]
    k = opts.index(correct)
    q = q0 + " " + " ".join(f"{letters[i]}. the {c}" for i, c in enumerate(opts))
    turns.append(Turn("mvqa", fam, q, f"{letters[k]}. the {correct}", {"options": opts, "answer": letters[k]}))
    # (3) adversarial (false premise)
    only1 = sorted(cats1 - cats2)
    if only1 and rng.random() < 0.5:
        c = _choice(rng, only1)
        q = T.MVQA["adv_q"][0].format(A=c)
        a = f"The {c} is not visible in the second image; it only appears in the first image."
        turns.append(Turn("mvqa", "adversarial_other_view", q, a, {"object": c}))
    elif absent:
        c = _choice(rng, absent)
        q = _choice(rng, T.MVQA["adv_q"]).format(A=c)
        a = f"There is no {c} in either image, so the question cannot be answered."
        turns.append(Turn("mvqa", "adversarial_absent", q, a, {"object": c}))
    else:
        raise Skip("no false premise available for an adversarial question")
    return turns


def to_llava(sample_id: str, images: list[str], turns: list[Turn], meta: dict | None = None,
             keep_turn_meta: bool = True) -> dict:
    """LLaVA conversation record; ``<image>`` once per image, in the first human turn."""
    conv = []
    for k, t in enumerate(turns):
        q = t.q
        if k == 0:
            q = "<image>\n" * len(images) + q
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": t.a})
    rec = {"id": sample_id}
    if len(images) == 1:
        rec["image"] = images[0]
    else:
        rec["images"] = list(images)
    rec["conversations"] = conv
    m = dict(meta or {})
    m["turns"] = [{"level": t.level, "family": t.family, **({"values": t.meta} if keep_turn_meta and t.meta else {})}
                  for t in turns]
    rec["meta"] = m
    return rec
