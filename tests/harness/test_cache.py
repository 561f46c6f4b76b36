import os

import numpy as np
import pytest
import torch

from encoders.spec import build_encoder
from harness.cache import FeatureCache


class Images(torch.utils.data.Dataset):
    transform_id = "raw"

    def __init__(self, n=10, fail_at=None, tag="a"):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 64, 64, generator=g)
        self.fail_at, self.tag = fail_at, tag

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError("killed mid-extraction")
        return self.x[i], 0

    def fingerprint(self):
        return f"images-{len(self.x)}-{self.tag}"


def test_cache_matches_direct_forward_and_is_reused(tmp_path):
    enc = build_encoder("builtin:tiny-vit")
    cache = FeatureCache(tmp_path)
    ds = Images()
    f = cache.get_or_compute(enc, ds, [-1, 1], ("cls", "patches", "avgpool"), batch_size=4, progress=False)
    assert f.computed and cache.stats.forwards == 3
    with torch.no_grad():
        out = enc(ds.x, layers=[3, 1])
    np.testing.assert_allclose(f["cls.3"], out.cls.numpy(), atol=2e-3, rtol=2e-3)  # float16 storage
    np.testing.assert_allclose(f["patches.1"], out.layers[1].patches.numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(f["avgpool.3"], out.patches.mean((1, 2)).numpy(), atol=2e-3, rtol=2e-3)
    assert f["cls.3"].dtype == np.float16
    g = cache.get_or_compute(enc, ds, [3, 1], ("cls", "patches", "avgpool"), batch_size=4, progress=False)
    assert not g.computed and cache.stats.forwards == 3 and g.key == f.key  # -1 and 3 are the same block


def test_killed_extraction_leaves_nothing_readable(tmp_path):
    enc = build_encoder("builtin:tiny-vit")
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        cache.get_or_compute(enc, Images(fail_at=7), [-1], batch_size=4, progress=False)
    assert os.listdir(tmp_path) == []
    f = cache.get_or_compute(enc, Images(), [-1], batch_size=4, progress=False)
    assert f.computed


def test_batch_size_halves_on_oom(tmp_path, monkeypatch):
    enc = build_encoder("builtin:tiny-vit")
    real = type(enc).forward
    calls = []

    def flaky(self, images, layers=(-1,)):
        calls.append(images.shape[0])
        if images.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, images, layers)

    monkeypatch.setattr(type(enc), "forward", flaky)
    f = FeatureCache(tmp_path).get_or_compute(enc, Images(n=5), [-1], batch_size=8, progress=False)
    assert f.meta["final_batch_size"] == 2 and f["cls.3"].shape == (5, 64)
    assert calls[:3] == [5, 4, 2]


def test_precision_is_part_of_the_key():
    """A bf16 run never reads fp32 features (or the reverse); fp32 normed keys are unchanged."""
    from harness.cache import FeatureCache
    args = ("enc", "data", "t", [11], ["cls"])
    fp32 = FeatureCache.key(*args)
    assert fp32 == FeatureCache.key(*args, norm=True, precision="fp32")
    assert len({fp32, FeatureCache.key(*args, precision="bf16"), FeatureCache.key(*args, precision="fp16"),
                FeatureCache.key(*args, norm=False), FeatureCache.key(*args, norm=False, precision="bf16")}) == 5
