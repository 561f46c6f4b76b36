"""Lexicon3D probing on ScanNet (paper Table 3): lifting 2D features to 3D, 3D semantic segmentation, partial-scene registration. See README.md."""
