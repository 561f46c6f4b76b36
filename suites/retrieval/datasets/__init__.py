"""Readers for the real on-disk layouts of the retrieval datasets, one module per format.

- ``revisited``: Revisited Oxford / Paris (``gnd_*.pkl`` + ``jpg/``), read with the restricted unpickler
- ``met``: The Met (``ground_truth/*.json`` + ``images/``)
- ``amstertime``: AmsterTime (``old/`` + ``new/`` paired by file stem, optional task CSV)
- ``common``: the format error, the lazy image list (``ImageListDataset``) and RGB loading they share
- ``transforms``: the paper's preprocessing (App. A.7)

Every reader checks the whole layout up front and stops with an error that names the file and what is
wrong (missing keys, listed images that are absent, degenerate boxes, bad indices). The layouts are
described in each module and in ``suites/retrieval/README.md``.
"""
from suites.retrieval.datasets.amstertime import AmsterTimeData, load_amstertime
from suites.retrieval.datasets.common import DatasetFormatError, ImageListDataset, ImageRecord, load_rgb
from suites.retrieval.datasets.met import MET_DISTRACTOR, MetData, load_met
from suites.retrieval.datasets.revisited import REVISITED_GND, QueryGnd, RevisitedData, load_revisited
from suites.retrieval.datasets.transforms import RetrievalTransform, make_transform, patch_multiple_size

__all__ = [
    "DatasetFormatError", "ImageRecord", "ImageListDataset", "load_rgb",
    "REVISITED_GND", "QueryGnd", "RevisitedData", "load_revisited",
    "MET_DISTRACTOR", "MetData", "load_met", "AmsterTimeData", "load_amstertime",
    "make_transform", "RetrievalTransform", "patch_multiple_size",
]
