"""The rule judge against hand-labelled answers (units, phrasings) and the LLM-judge hook on a local stub."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from harness.errors import UserError
from suites.vqa.judge import LLMJudge, judge_choice, judge_quantity, parse_choice, parse_quantity

QUANTITIES = [  # (answer, metres)
    ("1.2 m", 1.2), ("About 35 cm.", 0.35), ("The distance is 2 meters.", 2.0), ("1,5m", 1.5),
    ("roughly 120 centimeters apart", 1.2), ("5 feet 3 inches", 5 * 0.3048 + 3 * 0.0254), ("3 ft", 0.9144),
    ("It is 40 inches wide", 1.016), ("two meters", 2.0), ("850 mm", 0.85), ("0.75", 0.75),
    ("It is 6' tall", 1.8288), ("Region A is 1.10 metres tall.", 1.10),
]


@pytest.mark.parametrize("text,metres", QUANTITIES)
def test_quantities_with_units(text, metres):
    assert parse_quantity(text) == pytest.approx(metres, rel=1e-6)


def test_no_number_is_none_and_wrong():
    assert parse_quantity("I cannot tell") is None
    assert judge_quantity("I cannot tell", 1.0) == 0.0


@pytest.mark.parametrize("pred,target,ok", [
    ("1.2 m", 1.0, True), ("1.25 m", 1.0, True), ("1.26 m", 1.0, False), ("76 cm", 1.0, True),
    ("74 cm", 1.0, False), ("3 feet", 1.0, True), ("2 feet", 1.0, False)])
def test_quantity_within_25_percent(pred, target, ok):
    assert judge_quantity(pred, target, 0.25) == float(ok)


@pytest.mark.parametrize("text,options,canon", [
    ("Region A is to the left of region B.", ("left", "right"), "left"),
    ("left", ("left", "right"), "left"),
    ("To the right.", ("left", "right"), "right"),
    ("It is on the right side", ("left", "right"), "right"),
    ("Region A is below region B.", ("above", "below"), "below"),
    ("It sits higher than the sofa", ("above", "below"), "above"),
    ("The chair is larger.", ("bigger", "smaller"), "bigger"),
    ("smaller than region B", ("bigger", "smaller"), "smaller"),
    ("I don't know", ("left", "right"), None),
])
def test_relations(text, options, canon):
    assert parse_choice(text, options) == canon


def test_relation_scoring():
    assert judge_choice("Region A is to the left of region B.", "left", ("left", "right")) == 1.0
    assert judge_choice("Region A is to the right of region B.", "left", ("left", "right")) == 0.0


def test_llm_judge_hook_speaks_openai_chat(monkeypatch):
    seen = {}

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.update(body=body, path=self.path, auth=self.headers.get("Authorization"))
            reply = "correct" if "1.1 m" in body["messages"][0]["content"] else "wrong"
            data = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("VQA_TEST_KEY", "k123")
        judge = LLMJudge.parse(f"openai:http://127.0.0.1:{srv.server_port}/v1#judge-model#VQA_TEST_KEY")
        assert judge("How far?", "1.1 m", "1.0 m", "quantitative") == 1.0
        assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "judge-model"
        assert seen["auth"] == "Bearer k123"
        assert judge("How far?", "3 m", "1.0 m", "quantitative") == 0.0
    finally:
        srv.shutdown()
    with pytest.raises(UserError, match="openai:URL#MODEL"):
        LLMJudge.parse("gpt4")
