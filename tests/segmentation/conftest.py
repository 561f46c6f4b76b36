import pytest

from segmentation.seg_fixtures import make_ade20k, make_voc

# tiny geometry for CPU tests: 48x64 images, 32-pixel crops, tiny-vit (patch 8, 4 blocks)
TINY = {"iters": 20, "batch_size": 4, "warmup_iters": 2, "lr": 0.01, "crop_size": 32, "stride": 21, "scale": 32,
        "ms_crop_size": 32, "ms_stride": 16, "ms_scale": 32, "log_every": 10}


@pytest.fixture(scope="session")
def ade_root(tmp_path_factory):
    return make_ade20k(tmp_path_factory.mktemp("seg") / "ADEChallengeData2016", n_train=8, n_val=3)


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("seg") / "voc", n_train=5, n_val=3, n_aug=3)


@pytest.fixture(scope="session")
def tiny_encoder():
    from encoders.spec import build_encoder
    return build_encoder("builtin:tiny-vit")


@pytest.fixture(scope="session")
def mmseg_ns():
    from suites.segmentation.mmseg_compat import import_mmseg
    return import_mmseg()
