"""Adapters that turn each backbone family into an ``Encoder``, one module per library family.

=============  =================================================================================
module         spec scheme / what it serves
=============  =================================================================================
timm_vit       ``timm:NAME?ckpt=PATH``: any timm ViT (``forward_intermediates``)
hf             ``hf:LOCAL_DIR``: Hugging Face Dinov2 / DINOv3-ViT / CLIP / SigLIP / SigLIP2 vision models
hf_vlm         ``hf:LOCAL_DIR`` of a vision-language model: its vision tower (InternVL, LLaVA, Qwen2(.5)-VL)
openclip       ``open_clip:ARCH?ckpt=PATH``: open_clip ViT towers and its timm towers
torchhub       ``torchhub:REPO_DIR:ENTRY?ckpt=PATH``: DINOv2/DINOv3-style local hub repos
common         ``EncoderSpecError``, option parsing, rebuilding from a spec after pickling
=============  =================================================================================

Every adapter reads weights from local files only. A spec that would need a download fails with a
message that says what to pass instead. The registry (harness/registry.py) names each ``build_*``
factory lazily by its module; this package re-exports them and the encoder classes.
"""
from .common import EncoderSpecError
from .hf import HFVisionEncoder, build_hf
from .hf_vlm import VLM_TOWERS, QwenVisionEncoder
from .openclip import OpenClipEncoder, build_open_clip
from .timm_vit import TimmEncoder, build_timm
from .torchhub import HubEncoder, build_torchhub

__all__ = ["EncoderSpecError", "HFVisionEncoder", "build_hf", "VLM_TOWERS", "QwenVisionEncoder", "OpenClipEncoder",
           "build_open_clip", "TimmEncoder", "build_timm", "HubEncoder", "build_torchhub"]
