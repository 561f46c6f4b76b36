"""ImageNet-style readers: ``ROOT/{train,val}/<class>/*.JPEG`` or a file list ``ROOT/<split>.txt``
with lines ``relative/path label`` (label = class name or integer index)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from suites.images import IMAGE_EXTS, DataError, files_fingerprint, read_rgb


@dataclass(frozen=True)
class Sample:
    rel: str
    label: int


class ImageFolderSplit(torch.utils.data.Dataset):
    def __init__(self, root: Path, split: str, classes: list[str] | None = None, transform=None,
                 transform_id: str = "none"):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.transform_id = transform_id
        listing = self.root / f"{split}.txt"
        folder = self.root / split
        if folder.is_dir():
            self.classes, self.samples = self._scan_folder(folder, classes)
        elif listing.is_file():
            self.classes, self.samples = self._read_list(listing, classes)
        else:
            raise DataError(f"dataset '{self.root}' has neither a '{split}/' class folder nor '{split}.txt'")
        if not self.samples:
            raise DataError(f"split '{split}' of '{self.root}' holds no images")

    def _scan_folder(self, folder: Path, classes):
        found = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if not found:
            raise DataError(f"'{folder}' holds no class folders")
        classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"'{folder}' has classes not in the training set: {unknown[:10]}")
        samples = []
        for name in found:
            files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise DataError(f"class folder '{folder / name}' is empty (no {'/'.join(IMAGE_EXTS)} files)")
            samples += [Sample(str(p.relative_to(self.root)), classes.index(name)) for p in files]
        return classes, samples

    def _read_list(self, listing: Path, classes):
        rows = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{listing}:{n}: expected 'relative/path label', got '{line}'")
            rows.append(parts)
        names = sorted({lab for _, lab in rows if not lab.isdigit()})
        if classes is None:
            classes = names or [str(i) for i in range(max(int(lab) for _, lab in rows) + 1)]
        samples = []
        for rel, lab in rows:
            if not (self.root / rel).is_file():
                raise DataError(f"{listing}: image '{self.root / rel}' does not exist")
            idx = int(lab) if lab.isdigit() else (classes.index(lab) if lab in classes else None)
            if idx is None or not 0 <= idx < len(classes):
                raise DataError(f"{listing}: label '{lab}' of '{rel}' is not a known class")
            samples.append(Sample(rel, idx))
        return list(classes), samples

    def with_transform(self, transform, transform_id: str) -> "ImageFolderSplit":
        other = object.__new__(ImageFolderSplit)
        other.__dict__.update(self.__dict__)
        other.transform, other.transform_id = transform, transform_id
        return other

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples])

    def fingerprint(self) -> str:
        return files_fingerprint(self.root, [s.rel for s in self.samples],
                                 extra=f"{self.split}|{','.join(self.classes)}|" +
                                 ",".join(str(s.label) for s in self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        img = read_rgb(self.root / s.rel)
        return (self.transform(img) if self.transform else img), s.label
