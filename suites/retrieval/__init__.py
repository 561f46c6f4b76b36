"""Retrieval suites of the paper's Table 5: Revisited Oxford/Paris, Met, AmsterTime.

Building blocks: ``safe_pickle`` (restricted unpickler), ``datasets`` (readers for the real on-disk
layouts), ``metrics`` (revisitop mAP/mP@k, Met kNN + GAP, AmsterTime mAP/top-k), ``search`` (chunked
cosine ranking). Heavy imports stay in the submodules.
"""
