"""Top-k strips for the MLflow UI (``figures/topk.png`` of a retrieval run).

Three fixed queries (evenly spaced over the query list, so every encoder shows the same ones), each
followed by its top-5 gallery images; a green border marks a correct hit, red a wrong one, grey a junk
one (revisited Oxford/Paris: ignored by the metric). Thumbnails only (a few small images, well under a
second); a plain ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["N_QUERIES", "TOP_K", "fixed_queries", "topk_strip", "revisited_strip", "labelled_strip"]

N_QUERIES = 3
TOP_K = 5
THUMB = 96
COLOURS = {"correct": "#2ca02c", "wrong": "#d62728", "junk": "#999999", "query": "#1f4e9c"}


def fixed_queries(candidates: Sequence[int], n: int = N_QUERIES) -> list[int]:
    """``n`` entries of ``candidates`` spread evenly over it (all of them when there are fewer)."""
    candidates = list(candidates)
    if len(candidates) <= n:
        return candidates
    return [candidates[int(round(i))] for i in np.linspace(0, len(candidates) - 1, n)]


def _thumb(img):
    img = img.copy()
    img.thumbnail((THUMB, THUMB))
    return np.asarray(img.convert("RGB"))


def _cell(ax, img, colour: str, title: str) -> None:
    ax.imshow(_thumb(img))
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_edgecolor(colour)
        s.set_linewidth(4)
    ax.set_title(title, fontsize=7, color=colour)


def topk_strip(title: str, queries: list[int], ranks: np.ndarray, query_image: Callable[[int], object],
               gallery_image: Callable[[int], object], verdict: Callable[[int, int], str],
               query_name: Callable[[int], str], k: int = TOP_K):
    """One row per query: the query (blue border), then its ``k`` best gallery images.

    ranks: query-major gallery indices, best first (only the first ``k`` columns are read);
    ``verdict(q, g)`` -> ``correct`` / ``wrong`` / ``junk``; the image callables return PIL images.
    """
    from matplotlib.figure import Figure
    if not queries:
        raise ValueError("topk_strip needs at least one query")
    k = min(k, ranks.shape[1])
    fig = Figure(figsize=(1.35 * (k + 1), 1.55 * len(queries) + 0.3))
    axes = fig.subplots(len(queries), k + 1, squeeze=False)
    marks = {"correct": "✓", "wrong": "✗", "junk": "junk"}
    for row, q in zip(axes, queries):
        _cell(row[0], query_image(q), COLOURS["query"], f"query {query_name(q)}"[:28])
        for r in range(k):
            g = int(ranks[q, r])
            v = verdict(q, g)
            _cell(row[r + 1], gallery_image(g), COLOURS[v], f"#{r + 1} {marks[v]}")
    fig.suptitle(f"{title}: top-{k} (green correct, red wrong, grey junk)", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.5 / fig.get_figheight(), wspace=0.08,
                        hspace=0.35)  # fixed margins: tight_layout costs more than drawing the thumbnails
    return fig


def _pil(dataset):
    """``i -> PIL image`` of an ImageListDataset (its crop applied, its tensor transform not)."""
    plain = dataset.with_transform(None, "pil")
    return lambda i: plain[i][0]


def revisited_strip(data, ranks: np.ndarray):
    """Revisited Oxford/Paris: correct = easy or hard positive (the medium setup), junk = junk."""
    gnd = data.gnd

    def verdict(q: int, g: int) -> str:
        if g in gnd[q].easy or g in gnd[q].hard:
            return "correct"
        return "junk" if g in gnd[q].junk else "wrong"

    return topk_strip(data.name, fixed_queries(range(len(gnd))), ranks, _pil(data.queries()),
                      _pil(data.database()), verdict, lambda q: gnd[q].name)


def labelled_strip(title: str, queries, gallery, ranks: np.ndarray, skip_label=None):
    """Met (test queries vs exemplars) and AmsterTime (archival vs street view): a hit is correct when its
    label equals the query's; queries labelled ``skip_label`` (Met distractors) are never shown."""
    ql, gl = queries.labels, gallery.labels
    picks = fixed_queries([i for i, y in enumerate(ql) if skip_label is None or y != skip_label])
    if not picks:
        return None
    names = ["/".join(r.relpath.split("/")[-2:]) for r in queries.records]
    return topk_strip(title, picks, ranks, _pil(queries), _pil(gallery),
                      lambda q, g: "correct" if gl[g] == ql[q] else "wrong", lambda q: names[q])
