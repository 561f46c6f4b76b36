"""mmsegmentation 1.2.2 on mmcv-lite: the ``mmcv.ops`` shim and our registrations, in one idempotent call.

Why a shim: the PyPI wheel ``mmcv`` (full) must be compiled against the exact torch/CUDA pair and has no
wheels for today's torch; ``mmcv-lite`` is pure Python but has no compiled ops, so ``import mmcv.ops``
fails (``No module named 'mmcv._ext'``). mmseg imports ``mmcv.ops`` at module level in four files
(``utils/mask_classification``, ``models/utils/point_sample``, ``decode_heads/san_head``,
``losses/focal_loss``), so ``import mmseg.models`` fails although the linear heads we use need no op.
The shim, installed as ``sys.modules['mmcv.ops']`` only when the compiled ops are missing:

- ``point_sample``: mmcv's pure-PyTorch function (``grid_sample`` on [0,1] coordinates), re-implemented;
- ops that exist in mmcv but need compiled code (``sigmoid_focal_loss``, ...): importable stubs that
  raise :class:`MissingOpError` when *called* (mmseg's FocalLoss only calls it on CUDA tensors);
- any other name: ``ModuleNotFoundError`` (mmseg's ``cc_head``, ``psa_head``, ``point_head`` wrap their
  ``from mmcv.ops import X`` in ``except ModuleNotFoundError`` and degrade to ``X = None``);
- dunder names (``__file__``, ``__path__``, ...): ``AttributeError``, because ``inspect.getmodule`` (used
  by mmengine's registry) probes every module with ``hasattr(module, '__file__')``.

:func:`import_mmseg` then imports mmseg, registers our modules (the DINOv2 ``BNHead``, the
``HarnessEncoder`` backbone wrapping any harness ``Encoder``, the ``CheckSegLabels`` transform) and sets
mmengine's default scope to ``mmseg``. Calling it again returns the same namespace.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
import warnings
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SHIM_NAME = "mmcv.ops"
_LOCK = threading.RLock()
_STATE: dict = {}


class MissingOpError(NotImplementedError):
    """An mmcv op that needs the compiled extension (full mmcv) was called."""


# ------------------------------------------------------------------------------------ mmcv.ops shim
def _point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                  **kwargs) -> torch.Tensor:
    """mmcv.ops.point_sample: sample ``input`` [N,C,H,W] at ``points`` in [0,1]^2, shape (N,P,2) or
    (N,Hg,Wg,2) -> (N,C,P) or (N,C,Hg,Wg). Pure PyTorch in mmcv too (grid_sample on 2p-1)."""
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    out = F.grid_sample(input, points * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


# ops mmseg references by name whose mmcv implementation is compiled code
_COMPILED_STUBS = ("sigmoid_focal_loss", "softmax_focal_loss", "DeformConv2d", "ModulatedDeformConv2d",
                   "SyncBatchNorm")


def _stub(name: str):
    def missing(*args, **kwargs):
        raise MissingOpError(
            f"mmcv.ops.{name} needs mmcv's compiled extension, which mmcv-lite does not have. The "
            f"SpatialBoost segmentation heads never call it; for other mmseg heads install the full "
            f"'mmcv' built for this torch/CUDA.")
    missing.__name__ = missing.__qualname__ = name
    missing.__module__ = SHIM_NAME
    return missing


def _shim_getattr(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"module '{SHIM_NAME}' has no attribute '{name}'")
    raise ModuleNotFoundError(
        f"mmcv.ops.{name} is not available: mmcv-lite has no compiled ops (SpatialBoost installs a "
        f"shim for mmcv.ops; install the full 'mmcv' for this op)", name=f"{SHIM_NAME}.{name}")


def build_ops_shim() -> types.ModuleType:
    mod = types.ModuleType(SHIM_NAME, "SpatialBoost shim for mmcv.ops (mmcv-lite has no compiled ops).")
    mod.__spec__ = importlib.machinery.ModuleSpec(SHIM_NAME, loader=None)
    mod.__package__ = "mmcv"
    mod.point_sample = _point_sample
    for name in _COMPILED_STUBS:
        setattr(mod, name, _stub(name))
    mod.MissingOpError = MissingOpError
    mod.__getattr__ = _shim_getattr   # PEP 562 module __getattr__
    mod.SPATIALBOOST_SHIM = True
    return mod


def compiled_ops_available() -> bool:
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install_ops_shim(force: bool = False) -> bool:
    """Install the shim as ``mmcv.ops`` unless full mmcv is present. True when the shim is (now) active."""
    with _LOCK:
        current = sys.modules.get(SHIM_NAME)
        if current is not None and getattr(current, "SPATIALBOOST_SHIM", False):
            return True
        if not force and compiled_ops_available():
            return False
        import mmcv
        for name in [n for n in sys.modules if n == SHIM_NAME or n.startswith(SHIM_NAME + ".")]:
            del sys.modules[name]    # leftovers of a failed real import
        shim = build_ops_shim()
        sys.modules[SHIM_NAME] = shim
        mmcv.ops = shim
        return True


# --------------------------------------------------------------------------- encoder hand-over
_ENCODERS: "weakref.WeakValueDictionary[str, torch.nn.Module]" = weakref.WeakValueDictionary()


def register_encoder(encoder: torch.nn.Module) -> str:
    """Configs hold strings, not modules: hand an encoder to ``HarnessEncoder`` by key."""
    key = f"encoder-{id(encoder):x}"
    _ENCODERS[key] = encoder
    return key


def center_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad H, W (after normalisation: the mean colour) to multiples of the patch size, centred
    (DINOv2's ``CenterPadding``)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


# ------------------------------------------------------------------------------- registrations
def _define_modules(ns):
    from mmcv.transforms import BaseTransform
    from mmengine.model import BaseModule
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    from harness.device import autocast
    from heads.segmentation import StackedBNLinear
    from suites.images import DataError

    class HarnessEncoder(BaseModule):
        """A frozen harness ``Encoder`` as an mmseg backbone: normalised NCHW images -> the requested
        layers' patch maps as NCHW tensors (input centre-padded to the patch size, DINOv2-style)."""

        def __init__(self, encoder_key: str, layers: Sequence[int] = (-1,), precision: str = "fp32",
                     init_cfg=None):
            super().__init__(init_cfg)
            encoder = _ENCODERS.get(encoder_key)
            if encoder is None:
                raise KeyError(f"no encoder registered under '{encoder_key}' (use register_encoder)")
            self.encoder = encoder
            self.encoder.requires_grad_(False)
            self.encoder.eval()
            n = encoder.info.num_layers
            for i in layers:
                if not -n <= i < n:
                    raise DataError(f"a head asks for layer {i} but encoder '{encoder.info.spec}' has only "
                                    f"{n} blocks")
            self.layers = list(layers)
            self.precision = precision
            self.patch_size = encoder.info.patch_size

        def init_weights(self):      # pretrained and frozen: nothing to initialise
            self._is_init = True

        def train(self, mode: bool = True):
            super().train(mode)
            self.encoder.eval()      # frozen: no dropout, no BN updates, whatever the segmentor does
            return self

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = center_pad(x, self.patch_size)
            with torch.no_grad(), autocast(x.device, self.precision):
                out = self.encoder(x, layers=self.layers)
            return tuple(out.layers[i].patches.permute(0, 3, 1, 2).float().contiguous() for i in self.layers)

    class BNHead(BaseDecodeHead):
        """DINOv2's linear head: BatchNorm + 1x1 conv on the (resize-concatenated) patch maps.

        ``num_heads`` > 1 trains several heads (one per lr) on the same input; their logits are
        concatenated on channels (``out_channels = num_heads * num_classes``), head k = channels
        [k*C, (k+1)*C). With one head it is exactly DINOv2's ``BNHead`` with ``dropout_ratio=0``."""

        def __init__(self, num_heads: int = 1, init_std: float = 0.01, seed: int | None = None, **kwargs):
            kwargs.setdefault("dropout_ratio", 0.0)
            kwargs.setdefault("init_cfg", None)
            if kwargs["dropout_ratio"]:
                raise ValueError("BNHead supports dropout_ratio=0 only (DINOv2's linear head)")
            super().__init__(**kwargs)
            if self.in_channels != self.channels:
                raise ValueError(f"BNHead: channels ({self.channels}) must equal the (concatenated) input "
                                 f"channels ({self.in_channels})")
            del self.conv_seg
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            self.heads = StackedBNLinear(self.in_channels, self.num_classes, num_heads, init_std=init_std,
                                         generator=gen)
            self.num_heads = num_heads
            self.out_channels = num_heads * self.num_classes

        def features(self, inputs) -> torch.Tensor:
            """Backbone outputs -> the head input [B, D_in, h, w] (resize-concat for the +ms head)."""
            return self._transform_inputs(list(inputs))

        def forward(self, inputs) -> torch.Tensor:
            return self.heads(self.features(inputs))

        def loss_single(self, seg_logits: torch.Tensor, seg_label: torch.Tensor) -> torch.Tensor:
            """One head's loss as ``loss_by_feat`` computes it (logits resized to the label size, mmseg's
            ``loss_decode`` with the ignore index), without the ``acc_seg`` top-k over all pixels.
            ``seg_label``: [B, H, W] long."""
            seg_logits = F.interpolate(seg_logits, size=seg_label.shape[-2:], mode="bilinear",
                                       align_corners=self.align_corners)
            return self.loss_decode(seg_logits, seg_label, weight=None, ignore_index=self.ignore_index)

        def stack_labels(self, batch_data_samples) -> torch.Tensor:
            return self._stack_batch_gt(batch_data_samples).squeeze(1).long()

        def loss_by_feat(self, seg_logits, batch_data_samples) -> dict:
            if self.num_heads == 1:
                return super().loss_by_feat(seg_logits, batch_data_samples)
            total: dict = {}
            for k, chunk in enumerate(seg_logits.split(self.num_classes, dim=1)):
                for name, value in super().loss_by_feat(chunk, batch_data_samples).items():
                    total[name] = total[name] + value if name in total else value
            return total

    class CheckSegLabels(BaseTransform):
        """After ``LoadAnnotations``: stop on a label map whose size is not its image's, or that holds a
        class index outside the dataset's range, naming the file and the value (as stored on disk, before
        reduce_zero_label)."""

        def __init__(self, num_classes: int, ignore_index: int = 255, dataset: str = ""):
            self.num_classes, self.ignore_index, self.dataset = num_classes, ignore_index, dataset

        def transform(self, results: dict) -> dict:
            seg = results.get("gt_seg_map")
            if seg is None:
                return results
            ori = results.get("ori_shape")
            if ori is not None and tuple(seg.shape[:2]) != tuple(ori[:2]):
                raise DataError(f"label map '{results.get('seg_map_path')}' is {seg.shape[0]}x{seg.shape[1]} but "
                                f"image '{results.get('img_path')}' is {ori[0]}x{ori[1]}")
            counts = np.bincount(np.asarray(seg, dtype=np.int64).ravel(), minlength=256)
            bad = [v for v in np.flatnonzero(counts) if v >= self.num_classes and v != self.ignore_index]
            if bad:
                reduce = bool(results.get("reduce_zero_label"))
                raw = int(bad[0]) + 1 if reduce else int(bad[0])
                allowed = (f"0..{self.num_classes} (0 = other, ignored by reduce_zero_label)" if reduce
                           else f"0..{self.num_classes - 1}")
                raise DataError(f"label map '{results.get('seg_map_path')}' holds class index {raw}, outside "
                                f"{allowed} and not the ignore value {self.ignore_index}"
                                + (f" ({self.dataset}, {self.num_classes} classes)" if self.dataset else ""))
            return results

    ns.HarnessEncoder, ns.BNHead, ns.CheckSegLabels = HarnessEncoder, BNHead, CheckSegLabels


def import_mmseg() -> types.SimpleNamespace:
    """Install the shim if needed, import mmseg, register our modules. Idempotent and thread-safe.

    Returns a namespace: ``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``METRICS``, ``ConfigDict``,
    ``SegDataSample``, ``PixelData``, ``IoUMetric``, ``pseudo_collate``, ``HarnessEncoder``, ``BNHead``,
    ``CheckSegLabels``, ``shim`` (True when the mmcv.ops shim is active), ``versions``."""
    with _LOCK:
        if "ns" in _STATE:
            return _STATE["ns"]
        shim = install_ops_shim()
        with warnings.catch_warnings():
            # mmcv-lite warns on import that MultiScaleDeformableAttention (a compiled op) is missing
            warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
            warnings.filterwarnings("ignore", category=ImportWarning)
            import mmcv
            import mmengine
            import mmseg
            import mmseg.datasets  # noqa: F401  registers datasets and transforms
            import mmseg.evaluation  # noqa: F401
            import mmseg.models  # noqa: F401
            from mmengine.config import ConfigDict
            from mmengine.dataset import pseudo_collate
            from mmengine.registry import DefaultScope
            from mmengine.structures import PixelData
            from mmseg.evaluation import IoUMetric
            from mmseg.registry import DATASETS, METRICS, MODELS, TRANSFORMS
            from mmseg.structures import SegDataSample
        ns = types.SimpleNamespace(MODELS=MODELS, DATASETS=DATASETS, TRANSFORMS=TRANSFORMS, METRICS=METRICS,
                                   ConfigDict=ConfigDict, SegDataSample=SegDataSample, PixelData=PixelData,
                                   IoUMetric=IoUMetric, pseudo_collate=pseudo_collate, shim=shim,
                                   versions={"mmseg": mmseg.__version__, "mmengine": mmengine.__version__,
                                             "mmcv": mmcv.__version__})
        _define_modules(ns)
        for registry, name, cls in ((MODELS, "HarnessEncoder", ns.HarnessEncoder), (MODELS, "BNHead", ns.BNHead),
                                    (TRANSFORMS, "CheckSegLabels", ns.CheckSegLabels)):
            existing = registry.module_dict.get(name)
            if existing is not None and existing.__module__ != __name__:
                raise RuntimeError(f"mmseg already registers a '{name}' ({existing.__module__}); "
                                   f"SpatialBoost's would shadow it")
            registry.register_module(name=name, module=cls, force=True)
        if DefaultScope.get_current_instance() is None:
            DefaultScope.get_instance("spatialboost-mmseg", scope_name="mmseg")
        _STATE["ns"] = ns
        return ns

