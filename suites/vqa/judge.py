"""Scoring free-form answers of the local SpatialRGPT-style tasks without an LLM.

SpatialRGPT-Bench scores with GPT-4: qualitative answers must agree with the ground truth, quantitative ones
count as a success when the estimate is within 25 % of the true value (``|pred - gt| / gt <= 0.25``). Offline
we judge the same two formats by rule: :func:`parse_quantity` reads the first number with its unit ("1.2 m",
"about 35 cm", "4 feet 2 inches", "1,5m") into metres; :func:`parse_choice` maps phrasings ("to the left of",
"left", "No, it is below") to a canonical word. :class:`LLMJudge` is the hook for the paper's judge: any
OpenAI-compatible ``/chat/completions`` endpoint the user names (no key is read unless the user names its
environment variable).
"""
from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass

from harness.errors import UserError

UNITS = {  # unit word -> metres
    "mm": 1e-3, "millimeter": 1e-3, "millimeters": 1e-3, "millimetre": 1e-3, "millimetres": 1e-3,
    "cm": 1e-2, "centimeter": 1e-2, "centimeters": 1e-2, "centimetre": 1e-2, "centimetres": 1e-2,
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "km": 1e3, "kilometer": 1e3, "kilometers": 1e3,
    "in": 0.0254, "inch": 0.0254, "inches": 0.0254, '"': 0.0254,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "'": 0.3048,
    "yd": 0.9144, "yard": 0.9144, "yards": 0.9144,
}
_NUM = r"(\d+(?:[.,]\d+)?|\.\d+)"
_UNIT = r"(millimet(?:er|re)s?|centimet(?:er|re)s?|kilometers?|kilometer|met(?:er|re)s?|inch(?:es)?|feet|foot|" \
        r"yards?|mm|cm|km|ft|yd|in|m|\"|')"
_QTY = re.compile(_NUM + r"\s*" + _UNIT + r"(?![a-z])", re.IGNORECASE)
_BARE = re.compile(_NUM)
WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "half": 0.5}

# canonical answer -> phrasings (checked longest first, so "to the left of" wins over "left")
SYNONYMS = {
    "left": ("to the left of", "on the left", "left"),
    "right": ("to the right of", "on the right", "right"),
    "above": ("above", "higher than", "over", "on top of"),
    "below": ("below", "lower than", "under", "beneath", "underneath"),
    "bigger": ("bigger", "larger", "greater", "wider", "taller"),
    "smaller": ("smaller", "tinier", "less", "narrower", "shorter"),
    "closer": ("closer", "nearer", "in front of"),
    "farther": ("farther", "further", "behind"),
    "yes": ("yes", "correct", "true", "indeed"),
    "no": ("no", "not", "incorrect", "false"),
}


def _num(s: str) -> float:
    return float(s.replace(",", "."))


def parse_quantity(text: str, default_unit: str = "m") -> float | None:
    """Metres of the first number-with-unit in ``text`` (feet + inches add up); a bare number is read in
    ``default_unit``; number words ("two meters") are read too. None when there is no number."""
    t = " " + str(text).lower().replace("\u2019", "'") + " "
    for w, v in WORDS.items():
        t = re.sub(rf"\b{w}\b", str(v), t)
    m = _QTY.search(t)
    if m:
        val = _num(m.group(1)) * UNITS[m.group(2).lower()]
        if UNITS[m.group(2).lower()] in (0.3048,):         # 5 feet 3 inches / 5'3"
            rest = _QTY.match(t[m.end():].lstrip(" ,and"))
            if rest and UNITS[rest.group(2).lower()] == 0.0254:
                val += _num(rest.group(1)) * 0.0254
        return val
    m = _BARE.search(t)
    return _num(m.group(1)) * UNITS[default_unit] if m else None


def parse_choice(text: str, options: tuple[str, ...]) -> str | None:
    """The canonical option (among ``options``) whose phrasing appears first in ``text``; None if none."""
    t = " " + re.sub(r"[^a-z ]", " ", str(text).lower()) + " "
    best: tuple[int, int, str] | None = None
    for opt in options:
        for phrase in SYNONYMS.get(opt, (opt,)):
            m = re.search(rf"\b{re.escape(phrase)}\b", t)
            if m and (best is None or (m.start(), -len(phrase)) < (best[0], best[1])):
                best = (m.start(), -len(phrase), opt)
    return best[2] if best else None


def judge_quantity(pred: str, target: float, tolerance: float = 0.25) -> float:
    """1.0 when the predicted quantity is within ``tolerance`` relative error of ``target`` (SpatialRGPT)."""
    v = parse_quantity(pred)
    return float(v is not None and target > 0 and abs(v - target) / target <= tolerance)


def judge_choice(pred: str, target: str, options: tuple[str, ...]) -> float:
    return float(parse_choice(pred, options) == target)


@dataclass(frozen=True)
class LLMJudge:
    """An OpenAI-compatible chat endpoint as the judge (SpatialRGPT's GPT-4 protocol). ``url`` is the base
    (``http://host:port/v1``); ``key_env`` names the environment variable that holds the API key (optional)."""
    url: str
    model: str
    key_env: str = ""
    timeout_s: float = 60.0

    @classmethod
    def parse(cls, spec: str) -> "LLMJudge":
        """``openai:URL#MODEL[#KEY_ENV]``."""
        body = spec.partition(":")[2]
        parts = body.split("#")
        if not spec.startswith("openai:") or len(parts) < 2 or not parts[0] or not parts[1]:
            raise UserError(f"protocol.judge='{spec}': expected 'rule' or 'openai:URL#MODEL[#KEY_ENV]'")
        return cls(parts[0].rstrip("/"), parts[1], parts[2] if len(parts) > 2 else "")

    def prompt(self, question: str, answer: str, target: str, kind: str, tolerance: float) -> str:
        if kind == "quantitative":
            rule = (f"The answer is correct if its estimate is within {tolerance:.0%} of the ground truth "
                    f"(convert units first).")
        else:
            rule = "The answer is correct if it states the same spatial relation as the ground truth."
        return (f"You are grading a spatial question answer.\nQuestion: {question}\nGround truth: {target}\n"
                f"Answer: {answer}\n{rule}\nReply with exactly one word: correct or wrong.")

    def __call__(self, question: str, answer: str, target: str, kind: str, tolerance: float = 0.25) -> float:
        headers = {"Content-Type": "application/json"}
        if self.key_env:
            key = os.environ.get(self.key_env)
            if not key:
                raise UserError(f"LLM judge: environment variable {self.key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model, "temperature": 0, "max_tokens": 4,
                "messages": [{"role": "user", "content": self.prompt(question, answer, target, kind, tolerance)}]}
        req = urllib.request.Request(self.url + "/chat/completions", json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                reply = json.loads(r.read())["choices"][0]["message"]["content"]
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"LLM judge at {self.url}: {e}") from None
        return float(reply.strip().lower().startswith("correct"))
