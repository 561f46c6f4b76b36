"""Per-sample statistics: what a metric is made of, so any subset of samples can be re-scored.

A suite returns, beside each reported metric, the per-sample statistics it was reduced from (per-image
depth errors, per-image intersection/union counts, per-query AP, per-sample correctness, per-rollout
success), keyed by a sample id that is stable across encoders (an image's relative path, a query name,
a rollout's task/seed/index). The runner checks that reducing all rows gives the reported number and logs
them as the run artifact ``per_sample/<metric>.npz``; reports resample them (paired bootstrap over the ids
two runs share) to put a confidence interval on every difference. Users re-score or inspect runs from
the same files.

Reducers are named so the file says how to recompute the metric: ``mean`` (column 0), ``ratio``
(sum of column 0 / sum of column 1), ``miou`` (columns = C intersections then C unions; nan-mean over
classes with a union), ``gap`` (Met's global average precision from (confidence, correct, counted) rows),
``bleu1``..``bleu4`` (corpus BLEU-n from per-sentence (testlen, reflen, guess_1..4, correct_1..4) counts, as
pycocoevalcap sums them: BLEU is not a mean of sentence scores, but its counts add up).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from harness.errors import UserError


class SamplesError(UserError, ValueError):
    """A per-sample record is malformed or does not match its metric; the message names it."""


def _mean(stats: np.ndarray) -> float:
    return float(stats[:, 0].mean()) if len(stats) else float("nan")


def _ratio(stats: np.ndarray) -> float:
    den = stats[:, 1].sum()
    return float(stats[:, 0].sum() / den) if den > 0 else float("nan")


def _miou(stats: np.ndarray) -> float:
    c = stats.shape[1] // 2
    inter, union = stats[:, :c].sum(0), stats[:, c:].sum(0)
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


def _gap(stats: np.ndarray) -> float:
    """Global average precision (Met): rows (confidence, correct, counted); M = number of counted rows."""
    m = stats[:, 2].sum()
    if m <= 0:
        return float("nan")
    order = np.argsort(-stats[:, 0], kind="stable")
    correct = stats[order, 1]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    return float((precision * correct).sum() / m)


def bleu_from_sums(sums: np.ndarray, n: int) -> np.ndarray:
    """Corpus BLEU-n of pycocoevalcap's ``BleuScorer`` (its smoothing constants; brevity penalty on the summed
    lengths; reflen per sentence = the closest reference length) from column sums [..., 10] of rows
    (testlen, reflen, guess_1..4, correct_1..4): vectorised over leading axes (bootstrap draws)."""
    sums = np.asarray(sums, np.float64)
    testlen, reflen = sums[..., 0], sums[..., 1]
    guess, correct = sums[..., 2:2 + n], sums[..., 6:6 + n]
    bleu = np.prod((correct + 1e-15) / (guess + 1e-9), -1) ** (1.0 / n)
    ratio = (testlen + 1e-15) / (reflen + 1e-9)
    return np.where(ratio < 1, bleu * np.exp(1 - 1 / ratio), bleu)   # ratio > 0: the smoothing keeps it off 0


def _bleu(n: int) -> Callable[[np.ndarray], float]:
    return lambda stats: float(bleu_from_sums(stats.sum(0), n)) if len(stats) else float("nan")


REDUCERS: dict[str, Callable[[np.ndarray], float]] = {"mean": _mean, "ratio": _ratio, "miou": _miou, "gap": _gap,
                                                      **{f"bleu{n}": _bleu(n) for n in range(1, 5)}}


@dataclass
class PerSample:
    """Rows of per-sample statistics that reduce to one metric value (times ``scale``)."""
    ids: Sequence[str]
    stats: np.ndarray                      # [N, K]; a 1-D array is taken as one column
    reduce: str = "mean"                   # a key of REDUCERS
    scale: float = 1.0                     # e.g. 100 for metrics reported in percent
    columns: tuple[str, ...] = ()          # names of the K columns, for people reading the file
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = [str(i) for i in self.ids]
        stats = np.asarray(self.stats, dtype=np.float64)
        self.stats = stats[:, None] if stats.ndim == 1 else stats
        if self.stats.ndim != 2 or self.stats.shape[0] != len(self.ids):
            raise SamplesError(f"per-sample stats of shape {tuple(self.stats.shape)} do not match "
                               f"{len(self.ids)} sample ids")
        if self.reduce not in REDUCERS:
            raise SamplesError(f"unknown reducer '{self.reduce}'; known: {', '.join(REDUCERS)}")
        if len(set(self.ids)) != len(self.ids):
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise SamplesError(f"sample id '{dup}' occurs more than once")

    def __len__(self) -> int:
        return len(self.ids)

    def value(self, index: np.ndarray | None = None) -> float:
        """The metric over all rows, or over the rows ``index`` picks (with repeats: a bootstrap draw)."""
        stats = self.stats if index is None else self.stats[index]
        return REDUCERS[self.reduce](stats) * self.scale

    def aligned(self, ids: Sequence[str]) -> "PerSample":
        """The rows of ``ids`` in that order (every id must be present)."""
        pos = {s: i for i, s in enumerate(self.ids)}
        missing = [s for s in ids if s not in pos]
        if missing:
            raise SamplesError(f"{len(missing)} sample ids are missing, e.g. '{missing[0]}'")
        idx = np.array([pos[s] for s in ids], dtype=np.int64)
        return PerSample(list(ids), self.stats[idx], self.reduce, self.scale, self.columns, self.meta)

    # -- files ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        header = {"reduce": self.reduce, "scale": self.scale, "columns": list(self.columns), "meta": self.meta}
        np.savez_compressed(buf, ids=np.array(self.ids, dtype=np.str_), stats=self.stats,
                            header=np.array(json.dumps(header)))
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PerSample":
        """Read a ``per_sample/*.npz`` file (never unpickles)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                return cls(z["ids"].tolist(), z["stats"], header["reduce"], float(header["scale"]),
                           tuple(header.get("columns", ())), header.get("meta", {}))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise SamplesError(f"'{path}' is not a per-sample file: {e}") from None


def check_consistent(name: str, reported: float, samples: PerSample, rtol: float = 1e-4,
                     atol: float = 1e-6) -> None:
    """The per-sample rows must reduce to the reported number; anything else is a suite bug."""
    got = samples.value()
    if np.isnan(reported) and np.isnan(got):
        return
    if not np.isclose(got, reported, rtol=rtol, atol=atol):
        raise SamplesError(f"per-sample statistics of '{name}' reduce to {got!r}, but the suite reported "
                           f"{reported!r}")
