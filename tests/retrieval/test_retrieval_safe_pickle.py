"""The restricted unpickler loads plain data and numpy arrays and refuses everything else unexecuted."""
import os
import pickle

import numpy as np
import pytest

from harness.safe_pickle import UnsafePickleError, safe_load_pickle, safe_loads_pickle


def _gnd_like():
    return {
        "imlist": ["a", "b", "c"], "qimlist": ["q"],
        "gnd": [{"bbx": np.array([1.5, 2.0, 30.0, 40.0]), "easy": np.array([0, 2], dtype=np.int64),
                 "hard": np.array([], dtype=np.int64), "junk": [np.int64(1)]}],
        "misc": (1, 2.5, None, True, b"raw", {1, 2}, frozenset({3})),
    }


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
def test_plain_data_and_numpy_roundtrip(tmp_path, protocol):
    obj = _gnd_like()
    p = tmp_path / "gnd.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load_pickle(p)
    assert got["imlist"] == ["a", "b", "c"]
    g = got["gnd"][0]
    np.testing.assert_array_equal(g["bbx"], [1.5, 2.0, 30.0, 40.0])
    np.testing.assert_array_equal(g["easy"], [0, 2])
    assert g["easy"].dtype == np.int64 and g["hard"].size == 0
    assert int(g["junk"][0]) == 1
    assert got["misc"] == (1, 2.5, None, True, b"raw", {1, 2}, frozenset({3}))


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def test_os_system_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "gnd_roxford5k.pkl"
    p.write_bytes(pickle.dumps({"imlist": [], "x": _Evil(os.system, f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafePickleError) as e:
        safe_load_pickle(p)
    msg = str(e.value)
    assert str(p) in msg and "system" in msg and "refused global" in msg
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_builtins_eval_refused(tmp_path, protocol):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil(eval, "__import__('os').getpid()"), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"refused global '(builtins|__builtin__)\.eval'"):
        safe_load_pickle(p)


def test_handwritten_global_opcode_refused(tmp_path):
    # protocol-0 text: GLOBAL posix.system, MARK, STRING, TUPLE, REDUCE, STOP
    marker = tmp_path / "pwned2"
    p = tmp_path / "evil0.pkl"
    p.write_bytes(b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UnsafePickleError, match="posix.system"):
        safe_load_pickle(p)
    assert not marker.exists()


def test_numpy_outside_allow_list_refused(tmp_path):
    # a memmap subclass (numpy.memmap global) and numpy functions other than the four allowed
    for obj, name in [(np.memmap, "numpy._core.memmap.memmap"), (np.load, "numpy.load")]:
        data = pickle.dumps(obj, protocol=2)
        with pytest.raises(UnsafePickleError, match="refused global"):
            safe_loads_pickle(data, "x.pkl")
    # protocol 5 arrays use numpy._core.numeric._frombuffer: refused (documented)
    with pytest.raises(UnsafePickleError, match="_frombuffer"):
        safe_loads_pickle(pickle.dumps(np.arange(3), protocol=5), "p5.pkl")


def test_codecs_encode_only_latin1():
    # _codecs.encode('x', 'rot13') through protocol-0 GLOBAL: refused by the latin-1 stand-in
    data = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_loads_pickle(data, "c.pkl")


def test_corrupt_and_missing_files(tmp_path):
    p = tmp_path / "trunc.pkl"
    p.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:20])
    with pytest.raises(UnsafePickleError, match="trunc.pkl.*not a readable pickle"):
        safe_load_pickle(p)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        safe_load_pickle(tmp_path / "nope.pkl")


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` opcodes (what a Python-2 pickle of a numpy array holds)."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_bytes_as_py2_str(self, obj):
        import struct
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes_as_py2_str


def test_python2_and_numpy1_style_pickle(tmp_path):
    import io
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump({"gnd": [{"bbx": np.array([1.0, 2.0, 3.0, 4.0]),
                                                     "easy": np.array([5, 6], dtype=np.int64)}]})
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # numpy-1.x names
    assert b"numpy.core.multiarray" in data and b"_codecs" not in data
    p = tmp_path / "old.pkl"
    p.write_bytes(data)
    got = safe_load_pickle(p)
    np.testing.assert_array_equal(got["gnd"][0]["bbx"], [1, 2, 3, 4])
    np.testing.assert_array_equal(got["gnd"][0]["easy"], [5, 6])
