"""Retrieval suites of the paper's Table 5: Revisited Oxford/Paris, Met, AmsterTime.

Building blocks: ``datasets`` (one reader per real on-disk layout; ground-truth pickles go through
``harness.safe_pickle``), ``metrics`` (revisitop mAP/mP@k, Met kNN + GAP, AmsterTime mAP/top-k), ``search`` (chunked
cosine ranking). Heavy imports stay in the submodules.
"""
