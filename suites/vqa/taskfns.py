"""The document functions of the local lmms-eval tasks (what each task folder's ``utils.py`` binds with the
data root, the tolerance and the judge of the run)."""
from __future__ import annotations

from pathlib import Path

from .judge import LLMJudge, judge_choice, judge_quantity


def make(root: str, kind: str, tolerance: float = 0.25, judge: str = "rule") -> dict:
    root_p = Path(root)
    llm = LLMJudge.parse(judge) if judge != "rule" else None

    def doc_to_visual(doc):
        from PIL import Image
        with Image.open(root_p / doc["image"]) as im:
            return [im.convert("RGB")]

    def doc_to_text(doc, lmms_eval_specific_kwargs=None):
        return doc["question"]

    def doc_to_choice(doc):
        return list(doc["choices"])

    def doc_to_target(doc):
        return doc["answer_index"] if kind == "choice" else doc["answer"]

    def process_results(doc, results):
        pred = results[0] if results else ""
        if llm is not None:
            score = llm(doc["question"], pred, doc["answer"], kind, tolerance)
        elif kind == "quantitative":
            score = judge_quantity(pred, float(doc["target_value"]), tolerance)
        else:
            score = judge_choice(pred, doc["target"], tuple(doc["options"]))
        return {"acc": score}

    return {"doc_to_visual": doc_to_visual, "doc_to_text": doc_to_text, "doc_to_choice": doc_to_choice,
            "doc_to_target": doc_to_target, "process_results": process_results}
