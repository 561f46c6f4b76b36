"""Answer metrics of ScanQA / SQA3D: EM@1 and the captioning metrics through ``pycocoevalcap`` (BLEU-1..4,
METEOR, ROUGE-L, CIDEr), reported in percent.

Answers are normalised before scoring (lower case, punctuation removed, whitespace collapsed: what ScanQA's
and 3D-LLM's evaluation do instead of the Java PTB tokenizer; numerals 0-20 spelled out). A generated answer
is cut at its first line break (heads/qformer.py). EM@1 = the greedy answer equals one of the
reference answers after normalisation. METEOR runs pycocoevalcap's ``meteor-1.5.jar`` and needs a Java
runtime: without ``java`` on PATH it is left out (``missing`` names the reason), never reported as 0.
Per-sample rows exist for the metrics that are means over questions (EM@1, ROUGE-L, CIDEr); BLEU and
METEOR are corpus statistics (brevity penalty, aggregated fragmentation), so they have none.
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
    """(corpus scores %, per-sample scores % {metric: [n]}, missing {metric: reason})."""
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
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        scores[f"bleu{n + 1}"] = 100.0 * float(b[n])
    r, rs = Rouge().compute_score(gts, res)
    scores["rouge_l"], per["rouge_l"] = 100.0 * float(r), 100.0 * np.asarray(rs, np.float64)
    c, cs = Cider().compute_score(gts, res)
    scores["cider"], per["cider"] = 100.0 * float(c), 100.0 * np.asarray(cs, np.float64)
    if not meteor:
        missing["meteor"] = "disabled (protocol.meteor=false)"
    elif shutil.which("java") is None:
        missing["meteor"] = "no Java runtime on PATH (pycocoevalcap's METEOR runs meteor-1.5.jar)"
    else:
        scores["meteor"] = 100.0 * _meteor(gts, res)
    return scores, per, missing


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
