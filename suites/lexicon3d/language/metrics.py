"""Answer metrics of ScanQA / SQA3D: EM@1 and the captioning metrics through ``pycocoevalcap`` (BLEU-1..4,
METEOR, ROUGE-L, CIDEr), reported in percent.

Answers are normalised before scoring (lower case, punctuation removed, whitespace collapsed: what ScanQA's
and 3D-LLM's evaluation do instead of the Java PTB tokenizer; numerals 0-20 spelled out). A generated answer
is cut at its first line break (heads/qformer.py). EM@1 = the greedy answer equals one of the
reference answers after normalisation. METEOR runs pycocoevalcap's ``meteor-1.5.jar`` and needs a Java
runtime: without ``java`` on PATH it is left out (``missing`` names the reason), never reported as 0.
Per-sample rows exist for the metrics that are means over questions (EM@1, ROUGE-L, CIDEr) and for BLEU-n,
a corpus statistic whose per-sentence n-gram and length counts add up (harness/samples.py's ``bleuN``
reducers; the rows are pycocoevalcap's own ``cook_test`` counts). METEOR (aggregated fragmentation from the
Java scorer) has none.
"""
from __future__ import annotations

import re
import shutil

import numpy as np

_PUNCT = re.compile(r"[^\w\s']")
_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty").split()


def normalise(s: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed, numerals 0-20 spelled out ("2" = "two":
    ScanQA / SQA3D answers spell numbers, LMs often write digits)."""
    words = _PUNCT.sub(" ", s.lower()).split()
    return " ".join(_NUMBERS[int(w)] if w.isdigit() and int(w) <= 20 else w for w in words)


def exact_match(pred: str, answers: list[str]) -> float:
    p = normalise(pred)
    return float(any(p == normalise(a) for a in answers))


def caption_scores(preds: list[str], refs: list[list[str]], meteor: bool = True) -> tuple[dict, dict, dict]:
    """(corpus scores %, per-sample rows {metric: (stats [n, k], reducer)}, missing {metric: reason}). ``mean``
    rows are sentence scores in %; ``bleuN`` rows are counts that reduce to the corpus score / 100
    (``harness.samples.REDUCERS``)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        from harness.errors import UserError
        raise UserError("the QA metrics need pycocoevalcap: pip install --no-deps pycocoevalcap==1.2") from None
    # an empty hypothesis breaks ROUGE-L / BLEU's length ratio: score it as a one-token nonsense string
    res = {i: [normalise(p) or "<empty>"] for i, p in enumerate(preds)}
    gts = {i: [normalise(a) or "<empty>" for a in r] for i, r in enumerate(refs)}
    scores, per, missing = {}, {}, {}
    if not preds:
        return scores, per, {"all": "no predictions"}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    counts = bleu_counts(gts, res)
    for n in range(4):
        scores[f"bleu{n + 1}"] = 100.0 * float(b[n])
        per[f"bleu{n + 1}"] = (counts, f"bleu{n + 1}")
    r, rs = Rouge().compute_score(gts, res)
    scores["rouge_l"], per["rouge_l"] = 100.0 * float(r), (100.0 * np.asarray(rs, np.float64)[:, None], "mean")
    c, cs = Cider().compute_score(gts, res)
    scores["cider"], per["cider"] = 100.0 * float(c), (100.0 * np.asarray(cs, np.float64)[:, None], "mean")
    if not meteor:
        missing["meteor"] = "disabled (protocol.meteor=false)"
    elif shutil.which("java") is None:
        missing["meteor"] = "no Java runtime on PATH (pycocoevalcap's METEOR runs meteor-1.5.jar)"
    else:
        scores["meteor"] = 100.0 * _meteor(gts, res)
    return scores, per, missing


BLEU_COLUMNS = ("testlen", "reflen", "guess1", "guess2", "guess3", "guess4",
                "correct1", "correct2", "correct3", "correct4")


def bleu_counts(gts: dict, res: dict) -> np.ndarray:
    """Per-sentence BLEU counts [n, 10] (``BLEU_COLUMNS``: testlen, closest reflen, guess_1..4, correct_1..4), from
    pycocoevalcap's ``cook_refs`` / ``cook_test`` (what its ``Bleu`` sums), in ``res``'s key order."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
    rows = []
    for i in res:
        c = cook_test(res[i][0], cook_refs(gts[i], n=4), eff="closest", n=4)
        rows.append([c["testlen"], c["reflen"], *c["guess"], *c["correct"]])
    return np.asarray(rows, np.float64).reshape(-1, 10)


def _meteor(gts, res) -> float:
    from pycocoevalcap.meteor.meteor import Meteor
    m = Meteor()
    try:
        score, _ = m.compute_score(gts, res)
    finally:
        m.meteor_p.stdin.close()
        m.meteor_p.kill()
        m.meteor_p.wait()
        m.meteor_p = _Closed()
    return float(score)


class _Closed:
    """Stands in for the killed METEOR process so pycocoevalcap's ``__del__`` does not touch it again."""
    class _S:
        def close(self):
            pass
    stdin = _S()

    def kill(self):
        pass

    def wait(self):
        pass
