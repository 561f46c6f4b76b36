"""The lmms-eval model plugin: a LLaVA-style VLM built by the SpatialBoost trainer (any frozen encoder spec +
2-layer MLP projector + a causal LM), registered through lmms-eval's own mechanism (the ``lmms_eval.models``
entry-point group with a :class:`ModelManifest`, pyproject.toml), so ``lmms-eval --model spatialboost_vlm
--model_args run_dir=...,encoder=...,lm=...`` works from lmms-eval's CLI too.

Prompting and inference are :class:`.vlm_runner.VLMRunner`'s (the prompt the trainer trained with). Requests:
``generate_until`` (greedy, KV cache, stops at EOS / ``until`` / ``max_new_tokens``) and ``loglikelihood``
(lmms-eval's convention, as its LLaVA models: the *negative* log-likelihood of the continuation's tokens after
the generation prompt, and whether greedy decoding gives it; ``multiple_choice`` takes the argmin).

lmms-eval 0.7.3's evaluator passes every model output through ``unwrap_generation_output``, which turns a
``(float, bool)`` pair into its string, so ``multiple_choice`` then fails to unpack it; wrapping the pair in a
``GenerationResult`` (returned unchanged as ``.text``) keeps the tuple.
"""
from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms

from .vlm_runner import VLMRunner

MODEL_ID = "spatialboost_vlm"


class SpatialBoostLMM(VLMRunner, lmms):
    """lmms-eval "simple" model around a trained ``SpatialVLM`` (encoder, projector, lm, tokenizer); the
    inference itself is :class:`VLMRunner`'s."""
    is_simple = True

    def __init__(self, run_dir: str = "", encoder: str = "", lm: str = "builtin:smollm2-135m",
                 feature_layer: int = -1, image_size: int = 0, device: str | None = "cpu",
                 workspace: str = "", vlm: Any = None, max_new_tokens: int = 32, precision: str = "fp32",
                 batch_size: Any = 1, max_batch_size: Any = None, **unused):
        lmms.__init__(self)
        if vlm is None:
            if not run_dir or not encoder:
                raise ValueError("spatialboost_vlm needs model_args run_dir=<stage-2 run folder>,encoder=<spec>")
            from .vlm_cache import load_trained_vlm
            vlm = load_trained_vlm(run_dir, encoder, lm, int(feature_layer), workspace or None)
        self._init_runner(vlm, image_size, device, max_new_tokens, precision)

    @classmethod
    def from_vlm(cls, vlm, image_size: int = 0, device: str = "cpu", max_new_tokens: int = 32,
                 precision: str = "fp32") -> "SpatialBoostLMM":
        return cls(vlm=vlm, image_size=image_size, device=device, max_new_tokens=max_new_tokens, precision=precision)

    def _visuals(self, doc_to_visual, doc_id, task, split):
        vis = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        return [v for v in (vis or []) if v is not None]

    # ---------------------------------------------------------------------------------------- requests
    def generate_until(self, requests: list[Instance]) -> list[str]:
        res = []
        for ctx, gen_kwargs, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            text = self.generate(ctx, self._visuals(doc_to_visual, doc_id, task, split), until,
                                 int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))
            res.append(text)
        return res

    def loglikelihood(self, requests: list[Instance]) -> list:
        res = []
        for ctx, cont, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            if not isinstance(cont, str):
                cont = cont(self.task_dict[task][split][doc_id])
            ll, greedy = self.continuation_loglik(ctx, cont, self._visuals(doc_to_visual, doc_id, task, split))
            res.append(GenerationResult((-ll, greedy)))
        return res

    def clean(self) -> None:
        """lmms-eval calls this after the requests; its default deletes every nn.Module attribute. The VLM
        belongs to the caller (the suite reuses it and reads it afterwards), so nothing is freed here."""

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("spatialboost_vlm answers single-round requests")
