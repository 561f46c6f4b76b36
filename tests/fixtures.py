"""Small datasets written by the tests in exactly the real on-disk formats (never downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 200, 30), (200, 50, 200), (30, 200, 210)]


def class_image(cls: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A learnable image: class = colour and shape, with random position, size and background noise."""
    bg = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = rng.integers(r, size - r, size=2)
    box = [int(cx - r), int(cy - r), int(cx + r), int(cy + r)]
    colour = COLOURS[cls % len(COLOURS)]
    if cls % 2 == 0:
        d.ellipse(box, fill=colour)
    else:
        d.rectangle(box, fill=colour)
    return im


def make_imagefolder(root: Path, n_classes: int = 3, train_per_class: int = 10, val_per_class: int = 4,
                     size: int = 48, seed: int = 0, ext: str = ".JPEG") -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(n_classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                class_image(c, rng, size).save(d / f"{split}_{c}_{i}{ext}", quality=95)
    return root


def reference_met_knn(sims, labels, t, n_classes):
    """nikosips/met KNN_Classifier.predict, one query at a time: unique labels of the neighbours, class
    score = max similarity starting at 0 (negative similarities count as 0), exp(t * score), normalised
    with the classes that no neighbour has (exp(0) each). Returns (predictions, confidences)."""
    preds, confs = [], []
    for s_row, l_row in zip(sims, labels):
        uniq = np.unique(l_row)
        total = np.zeros(len(uniq))
        for s, lab in zip(s_row, l_row):
            i = np.where(uniq == lab)[0]
            total[i] = max(total[i], s)
        total = np.exp(t * total)
        total /= total.sum() + (n_classes - len(uniq)) * np.exp(0)
        preds.append(uniq[total.argmax()])
        confs.append(total.max())
    return np.array(preds), np.array(confs)
