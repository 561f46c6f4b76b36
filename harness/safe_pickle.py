"""A restricted unpickler for data files that come as pickles (revisitop's ``gnd_*.pkl``, CortexBench's
demonstration ``*.pickle``, any other suite's).

``pickle.load`` runs whatever callable a file names, so a downloaded pickle could execute code. This loader resolves only an explicit allow-list of globals; everything else is refused with an
error naming the file and the refused global, *before* anything is called.

Allowed:
- plain containers and scalars. The opcodes for dict/list/tuple/int/float/str/bytes/bool/None need no
  globals; ``builtins.set``/``frozenset`` appear in protocol <= 3 pickles of sets, and
  ``builtins.bytes`` (for b"") and ``_codecs.encode`` (latin-1 only) in protocol <= 2 pickles of
  ``bytes`` (numpy's raw array data included), so those are allowed too (under both the ``builtins``
  and the Python-2 ``__builtin__`` spelling).
- numpy arrays, as numpy itself pickles them at protocols 0-4: ``numpy.core.multiarray._reconstruct``
  (numpy 1.x name) / ``numpy._core.multiarray._reconstruct`` (numpy 2.x name), ``numpy.ndarray``,
  ``numpy.dtype`` and ``numpy.core/_core.multiarray.scalar``. Nothing else from numpy (no subclasses
  such as ``memmap``/``matrix``, no ``frombuffer``/``load``). Protocol-5 array pickles
  (``numpy._core.numeric._frombuffer``) are refused on purpose; re-save such a file with protocol 4.

After loading, the object tree is walked once more and any value of another type is refused (defence in
depth; nothing outside the allow-list can be constructed anyway).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UserError

__all__ = ["UnsafePickleError", "safe_load_pickle", "safe_loads_pickle"]


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list, holds a disallowed type, or is unreadable (bad
    input: a :class:`UserError`; callers may re-raise it as their own data error)."""


def _np_multiarray():
    core = getattr(np, "_core", None)  # numpy >= 2
    if core is None:  # pragma: no cover - numpy 1.x
        core = np.core
    return core.multiarray


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: pickle protocols <= 2 store ``bytes`` as
    ``_codecs.encode(<latin-1 str>, 'latin1')``. Any other codec is refused."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") \
            or not isinstance(obj, str):
        raise UnsafePickleError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return obj.encode("latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    ma = _np_multiarray()
    allowed: dict[tuple[str, str], Any] = {
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytes"): bytes,
        ("__builtin__", "set"): set,              # protocol <= 2 pickles use Python-2 module names
        ("__builtin__", "frozenset"): frozenset,
        ("__builtin__", "bytes"): bytes,          # protocol <= 2 writes b"" as bytes()
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    return allowed


_ALLOWED = _allowed_globals()
_PLAIN = (dict, list, tuple, set, frozenset, int, float, str, bytes, bool, type(None))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # latin1: Python-2 pickles of numpy arrays store raw bytes as str; numpy accepts latin-1 str.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # An overriding find_class sees the raw names (no fix_imports mapping), so both spellings of
        # builtins are in the allow-list.
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused global '{module}.{name}': only plain containers, numbers, strings "
                f"and numpy arrays may appear in this file (see harness/safe_pickle.py)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed")


def _check_tree(obj: Any, source: str, depth: int = 0) -> None:
    if depth > 100:
        raise UnsafePickleError(f"{source}: nesting deeper than 100 levels")
    if isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray:
            raise UnsafePickleError(f"{source}: array subclass {type(obj).__name__} is not allowed")
        if obj.dtype.hasobject:
            for x in obj.ravel():
                _check_tree(x, source, depth + 1)
        return
    if isinstance(obj, (np.generic, np.dtype)):
        return
    if type(obj) not in _PLAIN:
        raise UnsafePickleError(f"{source}: value of type {type(obj).__module__}.{type(obj).__qualname__} "
                                f"is not allowed")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_tree(k, source, depth + 1)
            _check_tree(v, source, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for x in obj:
            _check_tree(x, source, depth + 1)


def safe_loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; ``source`` names the data in error messages."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated / corrupt / wrong format
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
    _check_tree(obj, source)
    return obj


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle file that may only hold plain data and numpy arrays; refuses anything else.

    Raises FileNotFoundError for a missing file and UnsafePickleError (naming the file and the refused
    global or type) for anything outside the allow-list or a corrupt file. Nothing named by the file is
    ever called unless it is on the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file not found: {path}")
    return safe_loads_pickle(path.read_bytes(), str(path))
