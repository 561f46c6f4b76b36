"""Retrieval metrics of Table 5, in numpy.

- Revisited Oxford/Paris: ``compute_ap`` / ``compute_map`` reproduce revisitop's ``python/evaluate.py``
  (filipradenovic/revisitop) number for number, including its junk handling and its mP@k definition;
  ``revisitop_protocol`` builds the easy / medium / hard ground truth.
- Met: the non-parametric kNN classifier and GAP of nikosips/met (``code/classifiers/knn_classifier.py``,
  ``code/utils/utils.py``), vectorised, plus the K/t tuner.
- AmsterTime: retrieval in both directions over the full gallery (mAP, top-1, top-5). The reference
  script (seyrankhademi/AmsterTime ``amstertime/eval.py``) only looks at the first ``--k`` neighbours
  and ``--k`` defaults to 1, which makes its "mAP" equal to top-1; we always rank the whole gallery.

Rankings are **query-major**: ``ranks[i]`` lists gallery indices for query ``i``, best first (revisitop's
own code is database-major, ``ranks[:, i]``; transpose when porting numbers from there).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "compute_ap", "compute_map", "MapResult", "revisitop_protocol", "evaluate_revisitop", "PROTOCOLS",
    "expected_random_ap", "expected_random_pk", "random_ranking_floor",
    "knn_classify", "gap", "gap_non_distractor", "accuracy_non_distractor", "evaluate_met",
    "tune_knn", "KnnTuning", "MET_K_GRID", "MET_T_GRID",
    "ranking_ap_topk", "evaluate_amstertime",
]

# ----------------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# ----------------------------------------------------------------------------------------------------
PROTOCOLS = ("easy", "medium", "hard")


def compute_ap(pos_ranks: Sequence[int] | np.ndarray, nres: int) -> float:
    """Average precision of revisitop (trapezoid rule over the PR curve).

    pos_ranks: sorted 0-based ranks of the retrieved positives (after junk was removed);
    nres: number of positives of the query (positives never retrieved contribute 0).
    For the j-th positive (0-based) at rank r: precision_0 = j / r (1 when r == 0),
    precision_1 = (j + 1) / (r + 1); AP = sum (precision_0 + precision_1) / 2 / nres.
    """
    r = np.asarray(pos_ranks, dtype=np.float64)
    if nres <= 0:
        raise ValueError(f"compute_ap needs nres > 0, got {nres}")
    if r.size == 0:
        return 0.0
    j = np.arange(r.size, dtype=np.float64)
    p0 = np.divide(j, r, out=np.ones_like(r), where=r > 0)
    p1 = (j + 1.0) / (r + 1.0)
    return float(((p0 + p1) / 2.0).sum() / nres)


class MapResult(NamedTuple):
    """``map`` and ``mpk`` average over queries that have positives; ``aps``/``pks`` are NaN for the
    others (as revisitop)."""
    map: float
    aps: np.ndarray          # [nq]
    mpk: np.ndarray          # [len(kappas)]
    pks: np.ndarray          # [nq, len(kappas)]
    kappas: tuple[int, ...]


def _as_index_array(x, what: str) -> np.ndarray:
    a = np.asarray(x if x is not None else [], dtype=np.float64).ravel()
    if a.size and (np.any(a != np.round(a)) or np.any(a < 0)):
        raise ValueError(f"{what} must hold non-negative integer indices")
    return a.astype(np.int64)


def compute_map(ranks: np.ndarray, gnd: Sequence[Mapping[str, Iterable[int]]],
                kappas: Sequence[int] = (1, 5, 10)) -> MapResult:
    """mAP and mean precision@k over queries, as revisitop's ``compute_map``.

    ranks: [nq, n] int, query-major (row i = gallery indices for query i, best first); n may be the
    whole gallery or a top-n cut (positives beyond the cut count as not retrieved).
    gnd: per query ``{"ok": indices, "junk": indices}`` (junk optional).
    Junk: each retrieved positive moves up by the number of junk items ranked above it; junk itself is
    ignored. mP@k (revisitop's definition): with 1-based junk-shifted positive ranks ``pos``,
    ``kq = min(max(pos), k)`` and ``P@k = #(pos <= kq) / kq``, i.e. a query whose positives all sit
    above rank k is not penalised for having fewer than k of them. A query with no positive is skipped
    (NaN). A query with positives none of which is retrieved (only possible with a top-n cut) gets
    AP = 0 and P@k = 0 (revisitop would crash there).
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be 2-D [n_queries, n_ranked], got shape {ranks.shape}")
    nq = len(gnd)
    if ranks.shape[0] != nq:
        raise ValueError(f"ranks has {ranks.shape[0]} rows but gnd has {nq} queries; ranks must be "
                         f"query-major [n_queries, n_ranked] (revisitop's own layout is the transpose)")
    kappas = tuple(int(k) for k in kappas)
    if any(k < 1 for k in kappas):
        raise ValueError(f"kappas must be >= 1, got {kappas}")
    aps = np.full(nq, np.nan)
    pks = np.full((nq, len(kappas)), np.nan)
    for i in range(nq):
        ok = _as_index_array(gnd[i].get("ok"), f"gnd[{i}]['ok']")
        if ok.size == 0:
            continue
        junk = _as_index_array(gnd[i].get("junk"), f"gnd[{i}]['junk']")
        row = ranks[i]
        pos = np.flatnonzero(np.isin(row, ok))
        jpos = np.flatnonzero(np.isin(row, junk))
        # number of junk items strictly above each positive (searchsorted 'left' counts jpos < pos)
        pos = pos - np.searchsorted(jpos, pos, side="left")
        aps[i] = compute_ap(pos, ok.size)
        if pos.size == 0:
            pks[i] = 0.0
            continue
        pos1 = pos + 1
        for c, k in enumerate(kappas):
            kq = min(int(pos1.max()), k)
            pks[i, c] = np.count_nonzero(pos1 <= kq) / kq
    valid = ~np.isnan(aps)
    nvalid = int(valid.sum())
    if nvalid == 0:
        raise ValueError("no query has a positive: mAP is undefined")
    return MapResult(float(aps[valid].mean()), aps, pks[valid].mean(axis=0), pks, kappas)


def revisitop_protocol(gnd: Sequence[Mapping[str, Iterable[int]]],
                       level: Literal["easy", "medium", "hard"]) -> list[dict[str, np.ndarray]]:
    """Ground truth of one revisitop setup from per-query ``{easy, hard, junk}`` index lists.

    easy: ok = easy, junk = junk + hard; medium: ok = easy + hard, junk = junk;
    hard: ok = hard, junk = junk + easy.
    """
    if level not in PROTOCOLS:
        raise ValueError(f"unknown protocol {level!r}; valid: {PROTOCOLS}")
    out = []
    for i, g in enumerate(gnd):
        missing = [k for k in ("easy", "hard", "junk") if k not in g]
        if missing:
            raise KeyError(f"gnd[{i}] lacks {missing}")
        e, h, j = (_as_index_array(g[k], f"gnd[{i}]['{k}']") for k in ("easy", "hard", "junk"))
        if level == "easy":
            ok, jk = e, np.concatenate([j, h])
        elif level == "medium":
            ok, jk = np.concatenate([e, h]), j
        else:
            ok, jk = h, np.concatenate([j, e])
        out.append({"ok": ok, "junk": jk})
    return out


def evaluate_revisitop(ranks: np.ndarray, gnd: Sequence[Mapping[str, Iterable[int]]],
                       kappas: Sequence[int] = (1, 5, 10),
                       levels: Sequence[str] = PROTOCOLS) -> dict[str, float]:
    """Flat metrics ``mAP.E/M/H`` and ``mP<k>.E/M/H`` (fractions in [0, 1]; revisitop prints x100).
    Names avoid '@', which MLflow refuses in metric names."""
    out: dict[str, float] = {}
    for level in levels:
        res = compute_map(ranks, revisitop_protocol(gnd, level), kappas)
        tag = level[0].upper()
        out[f"mAP.{tag}"] = res.map
        for k, v in zip(res.kappas, res.mpk):
            out[f"mP{k}.{tag}"] = float(v)
    return out


def _log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log C(a, b) elementwise (-inf outside 0 <= b <= a)."""
    from scipy.special import gammaln
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = (b >= 0) & (b <= a)
    out = np.full(np.broadcast(a, b).shape, -np.inf)
    aa, bb = np.broadcast_arrays(a, b)
    out[ok] = gammaln(aa[ok] + 1) - gammaln(bb[ok] + 1) - gammaln(aa[ok] - bb[ok] + 1)
    return out


def expected_random_ap(n: int, m: int) -> float:
    """Exact expectation of revisitop's AP (:func:`compute_ap`) when the ``n`` ranked items (junk already
    removed), ``m`` of them positive, come in a uniformly random order.

    The j-th positive (0-based) sits at 0-based rank r with probability C(r, j) C(n-1-r, m-1-j) / C(n, m);
    AP is linear in the per-positive terms, so E[AP] = (1/m) sum_j sum_r P(r_j = r) (p0 + p1) / 2.
    """
    if not 0 < m <= n:
        raise ValueError(f"need 0 < m <= n, got n={n}, m={m}")
    j = np.arange(m, dtype=np.float64)[:, None]
    r = np.arange(n, dtype=np.float64)[None, :]
    logp = _log_comb(r, j) + _log_comb(n - 1 - r, m - 1 - j) - _log_comb(np.float64(n), np.float64(m))
    p = np.exp(logp)                                             # [m, n]; zero where impossible
    p0 = np.divide(j, r, out=np.ones(p.shape), where=r > 0)      # r == 0 only for j == 0: precision 1
    p1 = (j + 1.0) / (r + 1.0)
    return float((p * (p0 + p1) / 2.0).sum() / m)


def expected_random_pk(n: int, m: int, k: int) -> float:
    """Exact expectation of revisitop's P@k (see :func:`compute_map`) under a uniformly random order.

    With L = 1-based rank of the last positive (P(L = l) = C(l-1, m-1) / C(n, m)): P@k = m / L when
    L < k, else (#positives in the top k) / k; E[#positives in the top k] = min(k, n) m / n.
    """
    if not 0 < m <= n or k < 1:
        raise ValueError(f"need 0 < m <= n and k >= 1, got n={n}, m={m}, k={k}")
    lo, hi = m, min(k - 1, n)
    below = 0.0   # E[m / L ; L < k]
    p_below = 0.0  # P(L < k)
    if hi >= lo:
        l = np.arange(lo, hi + 1, dtype=np.float64)
        pl = np.exp(_log_comb(l - 1, np.float64(m - 1)) - _log_comb(np.float64(n), np.float64(m)))
        below = float((pl * m / l).sum())
        p_below = float(pl.sum())
    return below + (min(k, n) * m / n - m * p_below) / k


def random_ranking_floor(gnd: Sequence[Mapping[str, Iterable[int]]], n_db: int,
                         kappas: Sequence[int] = (1, 5, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the exact expected AP and P@k of a uniformly random ranking of the ``n_db`` database
    items (the trivial floor of the revisited benchmarks), with :func:`compute_map`'s junk handling:
    junk items drop out, so the order of the remaining ``n_db - #junk`` items is uniform.
    -> (aps [nq], pks [nq, len(kappas)]); NaN for queries without positives (skipped, as revisitop)."""
    nq = len(gnd)
    aps = np.full(nq, np.nan)
    pks = np.full((nq, len(kappas)), np.nan)
    for i, g in enumerate(gnd):
        ok = np.unique(_as_index_array(g.get("ok"), f"gnd[{i}]['ok']"))
        if ok.size == 0:
            continue
        junk = np.setdiff1d(_as_index_array(g.get("junk"), f"gnd[{i}]['junk']"), ok)
        n = n_db - junk.size
        aps[i] = expected_random_ap(n, ok.size)
        pks[i] = [expected_random_pk(n, ok.size, int(k)) for k in kappas]
    return aps, pks


# ----------------------------------------------------------------------------------------------------
# Met
# ----------------------------------------------------------------------------------------------------
MET_K_GRID = (1, 2, 3, 5, 7, 10, 15, 20, 50)
MET_T_GRID = (0.01, 0.1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 50.0, 100.0, 500.0)
DISTRACTOR = -1


def knn_classify(sims: np.ndarray, neighbor_labels: np.ndarray, t: float, n_classes: int,
                 k: int | None = None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Met's non-parametric classifier on precomputed neighbours.

    sims: [nq, K'] similarities of each query's nearest database items, sorted descending;
    neighbor_labels: [nq, K'] their class ids; k: use the first k columns (default all);
    n_classes: number of distinct classes in the database.
    Per query, each class among the k neighbours scores max(0, its max similarity) = s_c (the reference
    starts every class score at 0, so negative similarities count as 0); confidence of class c is
    exp(t s_c) / (sum_c' exp(t s_c') + (n_classes - #classes seen) * exp(0)) (classes not among the
    neighbours count with similarity 0, as the reference). Prediction = class with the highest s_c
    (exact ties: the smallest class id, as the reference's argmax over sorted unique labels);
    confidence = its normalised score. Computed in a shifted, overflow-free form.
    """
    sims = np.asarray(sims, dtype=np.float64)
    labels = np.asarray(neighbor_labels)
    if sims.shape != labels.shape or sims.ndim != 2:
        raise ValueError(f"sims {sims.shape} and neighbor_labels {labels.shape} must be equal 2-D shapes")
    if not t > 0:
        raise ValueError(f"temperature t must be > 0, got {t}")
    k = sims.shape[1] if k is None else int(k)
    if not 1 <= k <= sims.shape[1]:
        raise ValueError(f"k={k} outside 1..{sims.shape[1]} available neighbours")
    if np.any(np.diff(sims[:, :k], axis=1) > 1e-6):
        raise ValueError("sims must be sorted in descending order along each row")
    # the reference's per-class scores start at 0 (``total_sims = zeros``, then max with each neighbour's
    # similarity), so a negative similarity counts as 0; clipping keeps the rows sorted
    sims = np.maximum(sims, 0.0)
    nq = sims.shape[0]
    preds = np.empty(nq, dtype=labels.dtype)
    confs = np.empty(nq, dtype=np.float64)
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # earlier[j, j'] = j' < j
    for a in range(0, nq, chunk):
        s = sims[a:a + chunk, :k]
        lab = labels[a:a + chunk, :k]
        same = lab[:, :, None] == lab[:, None, :]
        first = ~(same & earlier).any(axis=2)            # first (= highest-sim) occurrence of each class
        n_seen = first.sum(axis=1)
        smax = s[:, 0]
        shifted = np.where(first, np.exp(t * (s - smax[:, None])), 0.0)
        denom = shifted.sum(axis=1) + (n_classes - n_seen) * np.exp(-t * smax)
        confs[a:a + chunk] = 1.0 / denom                # the winner's shifted score is exp(0) = 1
        tie = first & (s >= smax[:, None])
        if tie.sum() == tie.shape[0]:                   # common case: one class at the top
            preds[a:a + chunk] = lab[:, 0]
        else:
            for r in range(s.shape[0]):
                preds[a + r] = lab[r][tie[r]].min()
    return preds, confs


def _rel(preds, labels) -> np.ndarray:
    return np.asarray(preds) == np.asarray(labels)


def gap(preds, confs, labels, distractor=DISTRACTOR) -> float:
    """Global Average Precision (Met): queries sorted by confidence, GAP = sum_i P@i rel_i / M.

    rel_i = prediction correct; M = number of non-distractor queries (distractors can only add false
    positives). Confidence ties are broken by query order (stable sort; the reference's quicksort
    order is unspecified).
    """
    labels = np.asarray(labels)
    rel = _rel(preds, labels) & (labels != distractor)
    order = np.argsort(-np.asarray(confs, dtype=np.float64), kind="stable")
    rel = rel[order]
    m = int(np.count_nonzero(labels != distractor))
    if m == 0:
        raise ValueError("GAP is undefined without non-distractor queries")
    prec = np.cumsum(rel) / np.arange(1, rel.size + 1)
    return float((prec * rel).sum() / m)


def gap_non_distractor(preds, confs, labels, distractor=DISTRACTOR) -> float:
    """GAP restricted to the non-distractor queries."""
    labels = np.asarray(labels)
    keep = labels != distractor
    return gap(np.asarray(preds)[keep], np.asarray(confs)[keep], labels[keep], distractor)


def accuracy_non_distractor(preds, labels, distractor=DISTRACTOR) -> float:
    """Classification accuracy over non-distractor queries."""
    labels = np.asarray(labels)
    keep = labels != distractor
    if not keep.any():
        raise ValueError("accuracy is undefined without non-distractor queries")
    return float(np.mean(np.asarray(preds)[keep] == labels[keep]))


def evaluate_met(preds, confs, labels) -> dict[str, float]:
    """GAP, GAP without distractors, accuracy on non-distractors (fractions)."""
    return {"GAP": gap(preds, confs, labels), "GAP.nodistr": gap_non_distractor(preds, confs, labels),
            "ACC": accuracy_non_distractor(preds, labels)}


@dataclass
class KnnTuning:
    k: int
    t: float
    score: float                                     # val GAP of the chosen (k, t)
    table: dict[tuple[int, float], float] = field(default_factory=dict)


def tune_knn(sims: np.ndarray, neighbor_labels: np.ndarray, labels, n_classes: int,
             ks: Sequence[int] = MET_K_GRID, ts: Sequence[float] = MET_T_GRID) -> KnnTuning:
    """Grid search of K and t on a validation split, maximising GAP (as the reference's ``tune_KNN``).

    sims/neighbor_labels: the validation queries' top-max(ks) neighbours (one search serves the whole
    grid). The first best in grid order wins (strict >), as the reference. Note: the reference script
    fixes K to ``--k`` (default 1) even with ``--autotune`` because its ``args.k is None`` test never
    holds; we tune both, as its grid intends.
    """
    ks = sorted({int(k) for k in ks})
    if ks[-1] > np.asarray(sims).shape[1]:
        raise ValueError(f"need {ks[-1]} neighbours per query for K grid {ks}, have {np.asarray(sims).shape[1]}")
    best: KnnTuning | None = None
    table = {}
    for k, t in itertools.product(ks, ts):
        p, c = knn_classify(sims, neighbor_labels, float(t), n_classes, k=k)
        score = gap(p, c, labels)
        table[(k, float(t))] = score
        if best is None or score > best.score:
            best = KnnTuning(k, float(t), score)
    assert best is not None
    best.table = table
    return best


# ----------------------------------------------------------------------------------------------------
# AmsterTime (and any single-label retrieval)
# ----------------------------------------------------------------------------------------------------
def ranking_ap_topk(ranks: np.ndarray, query_labels, gallery_labels,
                    ks: Sequence[int] = (1, 5)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query AP and hit@k for label-defined relevance (gallery item relevant iff same label).

    ranks: [nq, n] query-major; for the AP we expect the full gallery (n = gallery size), then
    AP = sum_i P@i rel_i / #relevant (with one relevant item: 1 / its rank). hit@k = any relevant item
    in the first k. Returns (ap [nq], hits [nq, len(ks)], n_relevant [nq]). A query with no relevant
    item in the gallery gets AP 0 and no hits (the reference also counts it, as all-zero results).
    """
    ranks = np.asarray(ranks)
    ql = np.asarray(query_labels)
    gl = np.asarray(gallery_labels)
    if ranks.ndim != 2 or ranks.shape[0] != ql.shape[0]:
        raise ValueError(f"ranks {ranks.shape} must be [n_queries={ql.shape[0]}, n_ranked]")
    rel = gl[ranks] == ql[:, None]                              # [nq, n]
    n_rel = (gl[None, :] == ql[:, None]).sum(axis=1)            # relevant items in the whole gallery
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    ap = np.divide((prec * rel).sum(axis=1), n_rel, out=np.zeros(len(ql)), where=n_rel > 0)
    hits = np.stack([rel[:, :k].any(axis=1) for k in ks], axis=1).astype(np.float64)
    return ap, hits, n_rel


def evaluate_amstertime(old_new_ranks: np.ndarray, new_old_ranks: np.ndarray, old_labels, new_labels,
                        ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """AmsterTime retrieval both ways over the full gallery.

    old_new_ranks: archival ("old") queries ranked over all street-view ("new") images, and vice versa.
    Returns mAP/top1/top5 for ``old2new``, ``new2old`` and both query sets pooled (the reference's
    "All" line). Keys: ``mAP``, ``top1``, ``top5`` (pooled), ``mAP.old2new``, ``top1.new2old``, ...
    """
    ap_o, hits_o, _ = ranking_ap_topk(old_new_ranks, old_labels, new_labels, ks)
    ap_n, hits_n, _ = ranking_ap_topk(new_old_ranks, new_labels, old_labels, ks)
    out: dict[str, float] = {}
    for suffix, ap, hits in (("", np.concatenate([ap_o, ap_n]), np.concatenate([hits_o, hits_n])),
                             (".old2new", ap_o, hits_o), (".new2old", ap_n, hits_n)):
        out[f"mAP{suffix}"] = float(ap.mean())
        for c, k in enumerate(ks):
            out[f"top{k}{suffix}"] = float(hits[:, c].mean())
    return out
