"""``lexicon3d.scanqa`` / ``lexicon3d.sqa3d``: 3D question answering with frozen lifted features (paper
Table 3 VLR, App. A.4). The head is 3D-LLM's: a Q-Former (learned queries cross-attending to the scene's
lifted point features) projected into a frozen LM's input space; only the Q-Former trains (encoder and LM
frozen); answers by greedy decoding with a length cap. The paper's LM is FlanT5 (any local causal-LM folder
works here); the embedded default is SmolLM2-135M, which installs offline.

Points: ``points`` per scene drawn truly at random with the run's seed among the points some frame saw
(Lexicon3D's "random 5,000 points" always takes the first 5,000; fixed here), redrawn every epoch for
training, one fixed draw per scene for evaluation. The paper's first stage (10 epochs on 3D-Language data)
is out of reach offline: ``pretrain`` takes any JSONL of {"scene", "text"} and trains the Q-Former to
caption the scene before the QA epochs.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.config import field
from harness.registry import build_lm
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.qformer import PrefixLM, QFormer
from suites.images import DataError
from suites.lexicon3d.common import LiftOptions, resolve_layer
from suites.lexicon3d.features import lifted_features
from suites.lexicon3d.language.annotations import find
from suites.lexicon3d.language.common import default_root, fingerprint, read_split, scene_objects, split_names
from suites.lexicon3d.language.metrics import caption_scores, exact_match
from suites.lexicon3d.language.scenes import scannet_root
from suites.lexicon3d.scannet import ScanNetData

QTYPES = ("What", "Is", "How", "Can", "Which", "Others")
CAPTION = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


@dataclass(frozen=True)
class QAOptions(LiftOptions):
    lm: str = field("builtin:smollm2-135m", help="frozen LM: builtin:smollm2-135m, builtin:tiny-qwen2 (random, "
                    "tests) or a local causal-LM folder (paper: FlanT5)")
    points: int = field(5000, min=1, help="points per scene fed to the Q-Former, drawn at random with the seed")
    queries: int = field(32, min=1, help="learned queries = soft-prefix length (3D-LLM / BLIP-2: 32)")
    d_model: int = field(768, min=8, help="Q-Former width")
    qformer_layers: int = field(6, min=1, help="Q-Former layers (self + cross attention + FFN each)")
    qformer_heads: int = field(12, min=1, help="Q-Former attention heads")
    dropout: float = field(0.1, min=0, max=1, max_open=True, help="Q-Former dropout")
    epochs: int = field(35, min=1, help="QA epochs (paper: 35)")
    lr: float = field(1e-4, min=0, min_open=True, help="AdamW learning rate")
    weight_decay: float = field(0.05, min=0, help="AdamW weight decay")
    batch: int = field(16, min=1, help="questions per step")
    max_questions: int | None = field(None, min=1, help="at most this many fitting questions (seeded subset)")
    max_answer_tokens: int = field(10, min=1, help="greedy decoding length cap")
    eval_every: int = field(5, min=1, help="held-out generation every n epochs (and after the last)")
    meteor: bool = field(True, help="METEOR through pycocoevalcap's jar (needs java; ~1 min on 2 loaded cores)")
    pretrain: str | None = field(None, help="optional first stage: JSONL of {scene, text} (3D-Language data)")
    pretrain_epochs: int = field(10, min=1, help="epochs of the optional first stage (paper: 10)")


class _QABase(Suite):
    Options = QAOptions
    kind = ""

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        if preset == "tiny":
            return {"lm": "builtin:tiny-qwen2", "points": 256, "queries": 4, "d_model": 32, "qformer_layers": 1,
                    "qformer_heads": 2, "epochs": 2, "batch": 8, "max_answer_tokens": 4, "meteor": False,
                    "frame_size": (96, 128), "border": 4, "max_points": 500}
        # the frozen SmolLM2 costs ~1 s CPU per question per step and ~0.8 s per generated answer on 2 cores:
        # this only checks the pipeline inside ~2 min per encoder; it cannot train a useful Q-Former (README)
        return {"layer": -4, "max_points": 3000, "points": 1024, "queries": 8, "d_model": 128,
                "qformer_layers": 2, "qformer_heads": 4, "epochs": 1, "batch": 16, "max_questions": 64,
                "max_answer_tokens": 4, "eval_every": 1, "meteor": False, "lr": 1e-3}

    def default_data(self, workspace):
        return default_root(workspace)

    def _files(self, data) -> list[Path]:
        kinds = ("sqa3d_q", "sqa3d_a") if self.kind == "sqa3d" else (self.kind,)
        return [find(data, k, s) for k in kinds for s in ("train", "val")]

    def dataset_fingerprint(self, data) -> str:
        return fingerprint(data, self._files(data))

    def validate(self, ctx: RunContext) -> dict:
        scannet = scannet_root(ctx.data)
        objects = scene_objects(scannet, ScanNetData(scannet))
        return {f"{s}_questions": len(read_split(ctx.data, self.kind, s, objects)[0]) for s in ("train", "val")}

    def prompt(self, q) -> str:
        if q.situation:
            return f"Situation: {q.situation} Question: {q.question} Answer:"
        return f"Question: {q.question} Answer:"

    # ------------------------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> SuiteResult:
        o = self.options
        scannet = scannet_root(ctx.data)
        data = ScanNetData(scannet)
        layer = resolve_layer(ctx.encoder, o.layer)
        t0 = time.perf_counter()
        lifted = lifted_features(ctx, data, o.lift_params(), layer)
        t_lift = time.perf_counter() - t0
        objects = scene_objects(scannet, data)
        train, _ = read_split(ctx.data, self.kind, "train", objects)
        val, _ = read_split(ctx.data, self.kind, "val", objects)
        fit_s, hold_s, _ = split_names(lifted, o.holdout_fraction)
        rng = np.random.default_rng(ctx.seed)
        fit = [q for q in train if q.scene in fit_s]
        hold = [q for q in train if q.scene in hold_s]
        if o.max_questions is not None and len(fit) > o.max_questions:
            fit = [fit[i] for i in sorted(rng.choice(len(fit), o.max_questions, replace=False))]

        # per-scene seen points
        scenes = {}
        for k, name in enumerate(lifted.scenes):
            sl = lifted.scene(k)
            seen = np.flatnonzero(lifted.counts[:, sl].sum(0) > 0)
            if len(seen) == 0:
                raise DataError(f"scene '{name}': no point of its cloud is seen by any frame")
            scenes[name] = (np.asarray(lifted.coords[sl], np.float32)[seen], lifted.all_views(sl)[seen])
        eval_draw = {n: np.random.default_rng([ctx.seed, k]).permutation(len(c))[:o.points]
                     for k, (n, (c, _)) in enumerate(scenes.items())}

        def batch_points(names, draw):
            n = max(len(draw[s]) for s in names)
            D = next(iter(scenes.values()))[1].shape[1]
            f, x, m = torch.zeros(len(names), n, D), torch.zeros(len(names), n, 3), torch.zeros(len(names), n, dtype=torch.bool)
            for b, s in enumerate(names):
                idx = draw[s]
                c, v = scenes[s]
                f[b, :len(idx)] = torch.from_numpy(v[idx])
                x[b, :len(idx)] = torch.from_numpy(c[idx] - c.mean(0))
                m[b, :len(idx)] = True
            return f, x, m

        t1 = time.perf_counter()
        lm = build_lm(o.lm, ctx.workspace, ctx.seed)    # the trainer's loader, through the core registry
        plm = PrefixLM(lm.model.to(ctx.device), lm.tokenizer)
        t_lm = time.perf_counter() - t1
        torch.manual_seed(ctx.seed)
        D = next(iter(scenes.values()))[1].shape[1]
        qf = QFormer(D, lm.hidden_size, o.queries, o.d_model, o.qformer_layers, o.qformer_heads, o.dropout).to(ctx.device)
        opt = torch.optim.AdamW(qf.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        step = 0

        def train_epoch(items, prompt_of, answer_of, epoch, tag):
            nonlocal step
            qf.train()
            draw = {n: np.random.default_rng([ctx.seed, 1000 + epoch, k]).permutation(len(c))[:o.points]
                    for k, (n, (c, _)) in enumerate(scenes.items())}
            order = np.random.default_rng([ctx.seed, epoch]).permutation(len(items))
            losses = []
            for s in range(0, len(items), o.batch):
                its = [items[i] for i in order[s:s + o.batch]]
                f, x, m = batch_points([q.scene if hasattr(q, "scene") else q["scene"] for q in its], draw)
                loss = plm.loss(qf(f.to(ctx.device), x.to(ctx.device), m.to(ctx.device)),
                                [prompt_of(q) for q in its], [answer_of(q) for q in its])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
            ctx.log_curve({f"qformer.{tag}_loss": float(np.mean(losses))}, step)
            return float(np.mean(losses))

        def answer(items):
            qf.eval()
            out = []
            with torch.no_grad():
                for s in range(0, len(items), 32):
                    its = items[s:s + 32]
                    f, x, m = batch_points([q.scene for q in its], eval_draw)
                    out += plm.generate(qf(f.to(ctx.device), x.to(ctx.device), m.to(ctx.device)),
                                        [self.prompt(q) for q in its], o.max_answer_tokens)
            return out

        pre_losses = []
        if o.pretrain:
            pre = read_pretrain(Path(o.pretrain), scenes)
            for e in range(o.pretrain_epochs):
                pre_losses.append(train_epoch(pre, lambda r: "Describe the scene:", lambda r: r["text"], e, "pretrain"))
        losses, curve = [], []
        best, best_state, best_epoch = -1.0, copy.deepcopy(qf.state_dict()), 0
        for e in range(o.epochs):
            losses.append(train_epoch(fit, self.prompt, lambda q: q.answers[0], 100 + e, "train"))
            if (e + 1) % o.eval_every == 0 or e + 1 == o.epochs:
                v = 100.0 * float(np.mean([exact_match(p, q.answers) for p, q in zip(answer(hold), hold)]))
                ctx.log_curve({"qformer.val_em1": v}, step)
                ctx.report_intermediate(v, e)
                curve.append((e + 1, v))
                if v > best:
                    best, best_state, best_epoch = v, copy.deepcopy(qf.state_dict()), e + 1
        qf.load_state_dict(best_state)
        t2 = time.perf_counter()
        preds = answer(val)
        t_gen = time.perf_counter() - t2
        metrics, per_sample, missing = self.score(val, preds, fit, o.meteor)
        metrics["val.em1"] = best
        details = {"floors": {"floor": "the most frequent fitting answer",
                              "floor_blind": "the most frequent fitting answer to the same question text "
                                             "(a blind, text-only prior), else the most frequent"},
                   "missing_metrics": missing, "questions": {"fit": len(fit), "held_out": len(hold), "val": len(val)},
                   "train_loss": losses, "pretrain_loss": pre_losses, "held_out_em1_curve": curve,
                   "examples": [{"q": self.prompt(q), "pred": p, "answers": q.answers} for q, p in list(zip(val, preds))[:20]],
                   "seconds": {"lifting": round(t_lift, 3), "lm_load": round(t_lm, 3), "generate_val": round(t_gen, 3)},
                   "lifting_cached": not lifted.computed, "lifted_key": lifted.key, "block": layer, "lm": o.lm}
        selection = {"qformer": {"epoch": best_epoch, "rule": "max EM@1 on the held-out train scenes",
                                 "val_em1": best, "block": layer}}
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)

    def score(self, val, preds, fit, meteor: bool):
        metrics, per_sample = {}, {}
        ids = [q.uid for q in val]
        em = np.array([exact_match(p, q.answers) for p, q in zip(preds, val)])
        metrics["em1"] = 100.0 * float(em.mean())
        per_sample["em1"] = PerSample(ids, em[:, None], reduce="mean", scale=100.0)
        cap, per, missing = caption_scores(preds, [q.answers for q in val], meteor=meteor)
        metrics.update(cap)
        for k, v in per.items():
            per_sample[k] = PerSample(ids, v[:, None] / 100.0, reduce="mean", scale=100.0)
        # floors: most frequent answer overall / for the same question text
        from collections import Counter
        top = Counter(q.answers[0] for q in fit).most_common(1)[0][0]
        by_q: dict[str, Counter] = {}
        for q in fit:
            by_q.setdefault(q.question, Counter())[q.answers[0]] += 1
        for name, guess in (("floor", lambda q: top),
                            ("floor_blind", lambda q: by_q[q.question].most_common(1)[0][0] if q.question in by_q else top)):
            f = np.array([exact_match(guess(q), q.answers) for q in val])
            metrics[f"{name}.em1"] = 100.0 * float(f.mean())
            per_sample[f"{name}.em1"] = PerSample(ids, f[:, None], reduce="mean", scale=100.0)
        return metrics, per_sample, missing


def read_pretrain(path: Path, scenes: dict) -> list[dict]:
    """The optional first stage's JSONL: one {"scene": id, "text": caption} per line."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read pretraining file '{path}': {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            scene, text = str(r["scene"]), str(r["text"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"'{path}' line {i}: expected a JSON object with 'scene' and 'text'") from None
        if scene not in scenes:
            raise DataError(f"'{path}' line {i}: unknown scene '{scene}'")
        out.append({"scene": scene, "text": text})
    if not out:
        raise DataError(f"'{path}' holds no records")
    return out


class ScanQASuite(_QABase):
    kind = "scanqa"
    spec = SuiteSpec(
        name="lexicon3d.scanqa", version="1", task="3d-qa", heads=("qformer",),
        metrics=(MetricSpec("em1", "max", "val EM@1 (%): greedy answer equals a reference answer"),)
        + tuple(MetricSpec(m, "max", f"val {m} (%), pycocoevalcap") for m in CAPTION)
        + (MetricSpec("val.em1", "max", "EM@1 on the train scenes held out for selection (%)"),),
        primary="em1", validation="val.em1", paper_table="Table 3",
        description="ScanQA: Q-Former over lifted point features into a frozen LM (3D-LLM head), greedy answers.")


class SQA3DSuite(_QABase):
    kind = "sqa3d"
    spec = SuiteSpec(
        name="lexicon3d.sqa3d", version="1", task="3d-qa", heads=("qformer",),
        metrics=(MetricSpec("em1", "max", "val EM@1 (%): greedy answer equals a reference answer"),)
        + tuple(MetricSpec(f"em1.{t.lower()}", "max", f"val EM@1 of '{t}' questions (%)") for t in QTYPES)
        + tuple(MetricSpec(m, "max", f"val {m} (%), pycocoevalcap") for m in CAPTION)
        + (MetricSpec("val.em1", "max", "EM@1 on the train scenes held out for selection (%)"),),
        primary="em1", validation="val.em1", paper_table="Table 3",
        description="SQA3D: situation + question; Q-Former over lifted point features into a frozen LM.")

    def score(self, val, preds, fit, meteor: bool):
        metrics, per_sample, missing = super().score(val, preds, fit, meteor)
        for t in QTYPES:
            sel = [(p, q) for p, q in zip(preds, val) if q.qtype == t]
            if sel:
                em = np.array([exact_match(p, q.answers) for p, q in sel])
                metrics[f"em1.{t.lower()}"] = 100.0 * float(em.mean())
                per_sample[f"em1.{t.lower()}"] = PerSample([q.uid for _, q in sel], em[:, None], reduce="mean", scale=100.0)
            else:
                metrics[f"em1.{t.lower()}"] = float("nan")
        return metrics, per_sample, missing
