"""Write-to-temp-then-rename, in one place.

Everything the harness publishes (cache entries, datasets, checkpoints, manifests) is first written under
a temporary name in the same folder and renamed when complete, so a crash or a kill never leaves a
half-written file that a later run would read. Temporary names carry the pid and host so that stale ones
can be recognised (``is_stale_temp``) and so two writers never share one.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["temp_path", "atomic_write", "atomic_write_json", "atomic_file", "atomic_dir", "is_stale_temp"]

_TMP_MARK = ".tmp-"


def temp_path(final: str | os.PathLike) -> Path:
    """A sibling of ``final`` that no other process uses: ``.<name>.tmp-<pid>@<host>``."""
    final = Path(final)
    return final.with_name(f".{final.name}{_TMP_MARK}{os.getpid()}@{platform.node()}")


def is_stale_temp(path: str | os.PathLike) -> bool:
    """True for a temporary name of this host whose writing process no longer exists."""
    name = Path(path).name
    if _TMP_MARK not in name:
        return False
    owner = name.rsplit(_TMP_MARK, 1)[1]
    pid, _, host = owner.partition("@")
    if host != platform.node() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``final``, on any error it is removed.

    For writers that want a path (``torch.save``, ``np.save``, ``safetensors.save_file``, ``Image.save``).
    Note that ``np.save`` appends ``.npy`` to names without it: pass a file object or use ``atomic_write``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(final: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``final`` atomically; returns ``final``."""
    with atomic_file(final) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding=encoding)
        else:
            tmp.write_bytes(data)
    return Path(final)


def atomic_write_json(final: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> Path:
    dump_kwargs.setdefault("indent", 1)
    return atomic_write(final, json.dumps(obj, **dump_kwargs))


@contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``final`` when the block ends without error.

    If ``final`` appeared meanwhile (another process finished the same entry first) the new copy is
    discarded, unless ``replace=True``, which swaps it in (the old one is removed after the swap).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            if not replace:
                _remove(tmp)
                return
            trash = final.with_name(f".{final.name}.trash-{os.getpid()}@{platform.node()}")
            os.rename(final, trash)
            os.rename(tmp, final)
            _remove(trash)
            return
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            _remove(tmp)  # lost a race to an identical writer
    except BaseException:
        _remove(tmp)
        raise
