"""Language side of Lexicon3D (paper Table 3, VLR + VG): readers of ScanRefer / ScanQA / SQA3D JSON, the
world's description and question generators (from the written ScanNet files), scene objects (boxes) and
object features pooled from lifted points, the text encoder, caption metrics. See ../README.md."""
