"""Run by test_cache_distributed under torchrun: each rank encodes its shard into one shared cache."""
import json
import sys

import torch
import torch.distributed as dist

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[3])       # the repository root, as torchrun starts this file by path
from harness.cache import FeatureCache  # noqa: E402
from harness.registry import build_encoder  # noqa: E402


class Images(torch.utils.data.Dataset):
    transform_id = "rand64"

    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 64, 64, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i

    def fingerprint(self):
        return f"rand-{len(self.x)}"


def main():
    dist.init_process_group("gloo")
    root, n = sys.argv[1], int(sys.argv[2])
    enc = build_encoder("builtin:tiny-vit")
    cache = FeatureCache(root)
    feats = cache.get_or_compute(enc, Images(n), [-1, -2], ("cls", "patches"), batch_size=3, progress=False)
    out = {"rank": dist.get_rank(), "key": feats.key, "forwards": cache.stats.forwards,
           "computed": feats.computed, "shape": list(feats["patches.3"].shape)}
    with open(f"{root}/rank{dist.get_rank()}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
