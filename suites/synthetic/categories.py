"""Semantic categories of the synthetic world, their ids and palettes.

One table is the single source of truth: the semantic id written into every
segmentation map, the ScanNet-20 label used by the ScanNet writer and the
place where an object may stand all come from here, so the writers can never
disagree with the renderer about what a class is.

Id conventions
--------------
* semantic id 0 = nothing / unlabeled (only seen where no geometry was hit);
* ids 1..3 are "stuff" (wall, floor, ceiling), ids 4.. are "things" (objects);
* ADE20K-style maps use the semantic ids as they are (0 = other/ignored);
* VOC-style maps use :func:`voc_index` (0 = background incl. stuff, things 1..N);
* ScanNet-20 labels use :attr:`Category.scannet20` (255 = ignored, as in
  OpenScene's preprocessed clouds, where props like lamps are not one of the 20).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Category",
    "CATEGORIES",
    "STUFF",
    "THINGS",
    "THING_NAMES",
    "ALL_NAMES",
    "by_name",
    "by_id",
    "category_id",
    "validate_categories",
    "voc_index",
    "voc_class_names",
    "voc_palette",
    "ade_palette",
    "SCANNET20_NAMES",
    "SCANNET20_IGNORE",
    "SCANNET_LABELS",
    "scannet_label_lut",
]

SCANNET20_IGNORE = 255
SCANNET20_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "desk", "curtain", "refrigerator",
    "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)


@dataclass(frozen=True)
class Category:
    """One semantic class.

    ``support`` says where an instance may stand: ``floor``, ``table`` (small
    props; they go on the floor when the scene has no table), ``wall`` (hung) or
    ``structure`` (the room itself).
    """

    id: int
    name: str
    kind: str  # "stuff" | "thing"
    support: str  # "structure" | "floor" | "table" | "wall"
    scannet20: int = SCANNET20_IGNORE


CATEGORIES: tuple[Category, ...] = (
    Category(1, "wall", "stuff", "structure", 0),
    Category(2, "floor", "stuff", "structure", 1),
    Category(3, "ceiling", "stuff", "structure"),
    Category(4, "chair", "thing", "floor", 4),
    Category(5, "table", "thing", "floor", 6),
    Category(6, "sofa", "thing", "floor", 5),
    Category(7, "cabinet", "thing", "floor", 2),
    Category(8, "bookshelf", "thing", "floor", 9),
    Category(9, "bed", "thing", "floor", 3),
    Category(10, "lamp", "thing", "floor"),
    Category(11, "plant-pot", "thing", "floor"),
    Category(12, "box", "thing", "table"),
    Category(13, "ball", "thing", "table"),
    Category(14, "cylinder-can", "thing", "table"),
    Category(15, "bottle", "thing", "table"),
    Category(16, "mug", "thing", "table"),
    Category(17, "book", "thing", "table"),
    Category(18, "picture", "thing", "wall", 10),
)

# Raw ScanNet labels (the ``id`` column of ScanNet's scannetv2-labels.combined.tsv, = the ScanNet200 ids; what
# ScanNet's 2D ``label-filt/`` PNGs hold) of the nearest ScanNet class, with that class's NYU40 id/name.
# name -> (scannet id, scannet category, nyu40 id, nyu40 class). ScanNet has no "cylinder-can": the
# generic "container"; the mug is ScanNet's "cup"; the plant-pot its "potted plant".
SCANNET_LABELS: dict[str, tuple[int, str, int, str]] = {
    "wall": (1, "wall", 1, "wall"),
    "floor": (3, "floor", 2, "floor"),
    "ceiling": (41, "ceiling", 22, "ceiling"),
    "chair": (2, "chair", 5, "chair"),
    "table": (4, "table", 7, "table"),
    "sofa": (6, "couch", 6, "sofa"),
    "cabinet": (7, "cabinet", 3, "cabinet"),
    "bookshelf": (18, "bookshelf", 10, "bookshelf"),
    "bed": (11, "bed", 4, "bed"),
    "lamp": (28, "lamp", 35, "lamp"),
    "plant-pot": (1189, "potted plant", 40, "otherprop"),
    "box": (26, "box", 29, "box"),
    "ball": (168, "ball", 40, "otherprop"),
    "cylinder-can": (98, "container", 40, "otherprop"),
    "bottle": (65, "bottle", 40, "otherprop"),
    "mug": (130, "cup", 40, "otherprop"),
    "book": (22, "book", 23, "books"),
    "picture": (15, "picture", 11, "picture"),
}

STUFF = tuple(c for c in CATEGORIES if c.kind == "stuff")
THINGS = tuple(c for c in CATEGORIES if c.kind == "thing")
THING_NAMES: tuple[str, ...] = tuple(c.name for c in THINGS)
ALL_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
NUM_CLASSES = len(CATEGORIES)  # semantic ids 1..NUM_CLASSES

_BY_NAME = {c.name: c for c in CATEGORIES}
_BY_ID = {c.id: c for c in CATEGORIES}


def _did_you_mean(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def by_name(name: str) -> Category:
    """Look a category up by name; unknown names raise a ValueError naming them."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown category {name!r}{_did_you_mean(str(name))}; known: {', '.join(ALL_NAMES)}"
        ) from None


def by_id(cid: int) -> Category:
    try:
        return _BY_ID[int(cid)]
    except KeyError:
        raise ValueError(f"unknown category id {cid!r}; valid ids are 1..{NUM_CLASSES}") from None


def category_id(name: str) -> int:
    return by_name(name).id


def validate_categories(names) -> tuple[str, ...]:
    """Check a user's category selection: known, object ("thing") classes, no duplicates."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError("categories must name at least one object category")
    seen = set()
    for n in names:
        c = by_name(n)
        if c.kind != "thing":
            raise ValueError(
                f"category {n!r} is room structure, not an object; choose from {', '.join(THING_NAMES)}"
            )
        if n in seen:
            raise ValueError(f"category {n!r} is listed twice")
        seen.add(n)
    return names


def scannet_label_lut():
    """numpy LUT semantic id -> raw ScanNet label id (uint16, size 256; 0 = unannotated)."""
    import numpy as np

    lut = np.zeros(256, np.uint16)
    for c in CATEGORIES:
        lut[c.id] = SCANNET_LABELS[c.name][0]
    return lut


# --------------------------------------------------------------------------- VOC
def voc_class_names() -> tuple[str, ...]:
    """VOC-style class list: index 0 = background (stuff counts as background)."""
    return ("background",) + THING_NAMES


_VOC_INDEX = {c.id: (THINGS.index(c) + 1 if c.kind == "thing" else 0) for c in CATEGORIES}


def voc_index(semantic_id: int) -> int:
    return _VOC_INDEX.get(int(semantic_id), 0)


def voc_lut():
    """numpy LUT semantic id -> VOC index (size 256)."""
    import numpy as np

    lut = np.zeros(256, np.uint8)
    for sid, vi in _VOC_INDEX.items():
        lut[sid] = vi
    return lut


def voc_palette() -> list[int]:
    """The standard Pascal VOC colour map (bit-interleaved), 256 x RGB flattened.

    Index 255 (ignore) comes out as (224, 224, 192) as in the official PNGs.
    """
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend((r, g, b))
    return pal


def ade_palette() -> list[int]:
    """A fixed, well-spread palette for visualising semantic ids (not used for labels)."""
    import colorsys

    pal = [0, 0, 0]
    for i in range(1, 256):
        h = (i * 0.61803398875) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * ((i * 7) % 3) / 2, 0.95 - 0.3 * ((i * 5) % 2))
        pal.extend((int(r * 255), int(g * 255), int(b * 255)))
    return pal
