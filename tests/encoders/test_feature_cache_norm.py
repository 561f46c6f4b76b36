"""The feature cache keeps normed and raw (``norm=False``) block features apart; old normed keys stay valid."""
import hashlib
import json

import numpy as np
import torch

from encoders.spec import build_encoder
from harness.cache import FeatureCache


class _Images(torch.utils.data.Dataset):
    transform_id = "test-64"

    def __init__(self, n=3):
        self.x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0

    def fingerprint(self):
        return "images-3"


def test_norm_is_part_of_the_key_and_old_keys_are_kept(tmp_path):
    enc = build_encoder("builtin:tiny-vit")
    cache = FeatureCache(tmp_path)
    ds = _Images()
    normed = cache.get_or_compute(enc, ds, [1, -1], ("patches", "cls"), progress=False)
    raw = cache.get_or_compute(enc, ds, [1, -1], ("patches", "cls"), progress=False, norm=False)
    assert normed.computed and raw.computed and normed.key != raw.key
    assert cache.stats.forwards == 2
    # the key of a normed entry is the one written before the option existed
    legacy = hashlib.sha256(json.dumps([enc.fingerprint(), "images-3", "test-64", [1, 3],
                                        ["cls", "patches"]]).encode()).hexdigest()[:24]
    assert normed.key == legacy
    assert raw.meta["norm"] is False and normed.meta["norm"] is True
    with torch.no_grad():
        ref_raw = enc(ds.x, layers=[1], norm=False).layers[1].patches.numpy()
        ref_normed = enc(ds.x, layers=[1]).layers[1].patches.numpy()
    np.testing.assert_allclose(raw["patches.1"], ref_raw, atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(normed["patches.1"], ref_normed, atol=2e-2, rtol=1e-2)
    assert not np.allclose(raw["patches.1"], normed["patches.1"], atol=1e-2)
    # a second request of either is a hit, never the other's entry
    again = cache.get_or_compute(enc, ds, [-1, 1], ("cls", "patches"), progress=False, norm=False)
    assert not again.computed and again.key == raw.key and cache.stats.forwards == 2
