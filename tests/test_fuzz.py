"""Fuzzing the readers: malformed .npy headers and bodies, CSV text, zip archives and their members.

The property: a loader given hostile bytes returns a numeric array or raises one of rnncli's own
errors (`RnnCliError`), never anything else, never hangs, and never allocates more than the
bytes it was given promise. Each test runs ~200 examples in CI; for a longer session:

    RNNCLI_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnncli.cli import main
from rnncli.errors import RnnCliError, WeightsError
from rnncli.io import NPY_MAGIC, as_sequences, iter_npy_rows, load_array, read_npy_header, read_npz
from rnncli.weights import load_weights

EXAMPLES = int(os.environ.get("RNNCLI_FUZZ_EXAMPLES", "200"))
BUDGET = 64 << 20  # the fuzzed loaders see a 64 MiB machine, so a zip bomb is refused, not inflated
SAMPLE_NPY = Path(__file__).resolve().parent.parent / "sample_data" / "sines.npy"
HANG_SECONDS = 60  # a watchdog, not a speed test: any single example taking this long is a hang

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class Hang(BaseException):  # BaseException, so that no `except Exception` in a loader swallows it
    pass


@contextmanager
def no_hang():
    """Fail the example if it runs for HANG_SECONDS (SIGALRM; the tests run on the main thread)."""

    def alarm(signum, frame):
        raise Hang(f"a loader ran for {HANG_SECONDS} s: it hangs")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True, scope="module")
def small_machine():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rnncli.io.memory_budget", lambda: BUDGET)
        yield


def only_rnncli_errors(load, *args, **kwargs):
    """Call a loader; its only permitted failures are RnnCliError subclasses with a one-line message, and it
    may not warn (a Python warning is stray text on the user's stderr). Returns the result or None."""
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load(*args, **kwargs)
        except RnnCliError as exc:
            message = str(exc)
            assert message, "an error without a message"
            assert message.isprintable(), f"an error message must be one printable line: {message!r}"
            return None
        finally:
            assert not caught, [str(w.message) for w in caught]


# --- .npy headers and bodies -------------------------------------------------------------------

DESCRS = [
    "'<f4'", "'<f8'", "'>f8'", "'|b1'", "'<i8'", "'<u2'", "'<f2'", "'<c8'", "'|O'", "'<U3'", "'<U0'",
    "'|S2'", "'|V0'", "'|V8'", "'<M8[s]'", "'<m8'", "'f4'", "'float32'", "'q'", "'<f16'", "'?'",
    "[('a', '<f4'), ('b', '<f4')]", "[('', '|V4')]", "[('a', '<f4', (2,))]", "('<f4', (3,))",
    "('<f4', (10**9,))", "[]", "{}", "None", "3", "'<f4' 'x'", "'\\x00'", "'<f4'L", "[('a',)]",
    "(" * 120 + "'<f4'" + ")" * 120, "[" * 300 + "]" * 300,
]  # fmt: skip

dims = st.one_of(
    st.integers(0, 12),
    st.integers(-3, -1),
    st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, 10**18, 10**30]),
)
shapes = st.one_of(
    st.lists(dims, max_size=4).map(lambda d: repr(tuple(d))),
    st.lists(st.integers(0, 2), min_size=30, max_size=70).map(lambda d: repr(tuple(d))),
    st.sampled_from(["[3, 2]", "(2.5,)", "('3',)", "(True,)", "None", "3", "(3L,)", "(1" + "0" * 5000 + ",)"]),
)
header_dicts = st.builds(
    lambda parts, order: "{" + ", ".join(parts[i] for i in order) + "}",
    st.tuples(
        st.one_of(st.sampled_from(DESCRS), st.text(max_size=12).map(repr)).map(lambda d: f"'descr': {d}"),
        st.sampled_from(["False", "True", "0", "'no'", "None"]).map(lambda f: f"'fortran_order': {f}"),
        shapes.map(lambda s: f"'shape': {s}"),
        st.sampled_from(["'extra': 1", "'descr': '<f8'", "1: 2", "**x"]),
    ),
    # mostly the three keys in any order; sometimes one missing or one too many
    st.permutations(range(3)).flatmap(lambda p: st.sampled_from([p, p, p, p[:2], (*p, 3)])),
)
header_text = st.one_of(header_dicts, st.text(max_size=80), st.from_regex(r"\{[ -~]{0,60}\}", fullmatch=True))
versions = st.sampled_from([(1, 0), (2, 0), (3, 0), (1, 1), (0, 0), (255, 255)])


@st.composite
def npy_files(draw):
    """A .npy file with a structured-but-malformed header and a body of some length."""
    text = draw(header_text)
    major, minor = draw(versions)
    encoded = text.encode("utf-8" if major >= 3 else "latin1", errors="replace") + b"\n"
    if draw(st.booleans()):  # pad like numpy does, to 64 bytes
        encoded = encoded[:-1] + b" " * (-(len(encoded) + 10) % 64) + b"\n"
    length_field = "<H" if major == 1 else "<I"
    length = draw(st.one_of(st.just(len(encoded)), st.integers(0, 2**16 - 1 if major == 1 else 2**32 - 1)))
    try:
        prefix = NPY_MAGIC + bytes([major, minor]) + struct.pack(length_field, length)
    except struct.error:
        prefix = NPY_MAGIC + bytes([major, minor])
    body = draw(st.one_of(st.binary(max_size=256), st.integers(0, 4096).map(bytes)))
    return prefix + encoded + body


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 flip a byte, 1 delete a byte, 2 insert a byte, 3 truncate."""
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        i = position % len(buffer)
        if kind == 0:
            buffer[i] = value
        elif kind == 1:
            del buffer[i]
        elif kind == 2:
            buffer.insert(i, value)
        else:
            del buffer[i:]
    return bytes(buffer)


edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16), st.integers(0, 255)), max_size=6)
small_arrays = st.builds(
    lambda dtype, shape, fortran: np.asfortranarray(np.ones(shape, dtype)) if fortran else np.ones(shape, dtype),
    st.sampled_from(["<f4", ">f8", "<i4", "|u1", "|b1", "<f2", "<c8", "<U2"]),
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
    st.booleans(),
)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


mutated_npy = st.builds(lambda a, e: mutate(npy_bytes(a), e), small_arrays, edits)
any_npy = st.one_of(npy_files(), mutated_npy)


def check_loaded(loaded, data: bytes) -> None:
    assert loaded.array.dtype.kind in "biuf", loaded.array.dtype
    only_rnncli_errors(as_sequences, loaded.array, loaded.source)


@fuzz
@given(any_npy)
def test_npy_bytes_load_or_raise_rnncli_errors(data):
    loaded = only_rnncli_errors(load_array, io.BytesIO(data), "npy", name="fuzz.npy")
    if loaded is not None:
        assert loaded.array.nbytes <= len(data), "the array is larger than the bytes it came from"
        check_loaded(loaded, data)


@fuzz
@given(any_npy)
def test_npy_files_through_the_streaming_reader(tmp_path_factory, data):
    """The path-based reader `rnncli run` streams long inputs with: header, body check, row blocks."""
    path = tmp_path_factory.mktemp("npy") / "fuzz.npy"
    path.write_bytes(data)

    def stream():
        with open(path, "rb") as fp:
            shape, fortran, dtype = read_npy_header(fp, "fuzz.npy")
            if len(shape) == 2 and not fortran:
                for block in iter_npy_rows(fp, "fuzz.npy", shape, dtype, 3):
                    assert block.nbytes <= len(data)

    only_rnncli_errors(stream)
    loaded = only_rnncli_errors(load_array, path)
    if loaded is not None:
        check_loaded(loaded, data)


# --- CSV / text --------------------------------------------------------------------------------

cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", " ", "nan", "-inf", "Infinity", "1e999", "0x10", "1_000", "1,5", "'3'", '"4"', "１", "٣"]),
    st.text(max_size=6),
)
rows = st.lists(cells, min_size=0, max_size=6).flatmap(
    lambda row: st.sampled_from([",", "\t", ";", "|", " ", "  "]).map(lambda sep: sep.join(row))
)
csv_text = st.one_of(
    st.lists(st.one_of(rows, st.sampled_from(["# comment", "a,b,c", "", "\x00", "\r", "\ufeff1,2"])), max_size=12).map(
        lambda lines: "\n".join(lines)
    ),
    st.text(alphabet="0123456789.,;|\t -+eEnaifNIF#\n\r\"'x\x00\u2028", max_size=200),
    st.text(max_size=100),
)
csv_bytes = st.one_of(
    csv_text.map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    st.binary(max_size=200),
    st.builds(lambda t, e: mutate(t.encode("utf-8", errors="replace"), e), csv_text, edits),
)


@fuzz
@given(csv_bytes)
def test_csv_text_loads_or_raises_rnncli_errors(data):
    loaded = only_rnncli_errors(load_array, io.BytesIO(data), "csv", name="fuzz.csv")
    if loaded is not None:
        assert loaded.array.ndim == 2 and loaded.array.size <= len(data)
        check_loaded(loaded, data)


@fuzz
@given(st.one_of(csv_bytes, any_npy, st.binary(max_size=300)))
def test_stdin_sniffing_never_leaks_other_errors(data):
    loaded = only_rnncli_errors(load_array, io.BytesIO(data), name="<stdin>")
    if loaded is not None:
        check_loaded(loaded, data)


# --- zip archives (.npz, weights) --------------------------------------------------------------

member_names = st.one_of(
    st.sampled_from(["x.npy", "arr_0.npy", "../../evil.npy", "/abs.npy", "a/b.npy", ".npy", "x", "x.NPY", "é.npy"]),
    st.text(max_size=10).map(lambda s: s + ".npy"),
    st.from_regex(r"(weight|bias)_(ih|hh)_l[0-2](_reverse)?\.npy", fullmatch=True),
    st.just("__rnncli__.npy"),
)
member_bodies = st.one_of(
    small_arrays.map(npy_bytes),
    any_npy,
    st.binary(max_size=64),
    st.sampled_from([npy_bytes(np.array('{"activation": "relu"}')), npy_bytes(np.array("not json"))]),
    st.builds(lambda h, w: npy_bytes(np.zeros((h, w), np.float32)), st.integers(0, 4), st.integers(0, 4)),
)
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


@st.composite
def zip_archives(draw):
    buffer = io.BytesIO()
    members = draw(st.lists(st.tuples(member_names, member_bodies, st.sampled_from(COMPRESSIONS)), max_size=5))
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate member names are part of the point
        for name, body, compression in members:
            archive.writestr(zipfile.ZipInfo(name), body, compress_type=compression)
    data = buffer.getvalue()
    how = draw(st.sampled_from(["intact", "mutated", "lying sizes", "bomb"]))
    if how == "mutated":
        data = mutate(data, draw(edits))
    elif how == "lying sizes":
        data = lie_about_sizes(data, draw(st.integers(0, 2**32 - 1)))
    elif how == "bomb":
        data = zip_bomb(draw(st.sampled_from(COMPRESSIONS[:2])), draw(st.sampled_from([BUDGET + 1, 4 * BUDGET])))
    return data


def lie_about_sizes(data: bytes, size: int) -> bytes:
    """Overwrite every uncompressed-size field (local headers and central directory) with `size`."""
    buffer = bytearray(data)
    packed = struct.pack("<I", size)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = buffer.find(signature)
        while start != -1:
            buffer[start + offset : start + offset + 4] = packed
            start = buffer.find(signature, start + 4)
    return bytes(buffer)


_BOMBS: dict[tuple[int, int], bytes] = {}


def zip_bomb(compression: int, size: int) -> bytes:
    """A member whose header promises `size` bytes of zeros (a valid .npy header, then nothing but 0s)."""
    if (compression, size) not in _BOMBS:
        buffer = io.BytesIO()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
        with zipfile.ZipFile(buffer, "w", compression) as archive, archive.open("bomb.npy", "w") as member:
            member.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(size // len(chunk) + 1):
                member.write(chunk)
        _BOMBS[(compression, size)] = buffer.getvalue()
    return _BOMBS[(compression, size)]


@fuzz
@given(zip_archives(), st.one_of(st.none(), member_names.map(lambda n: n[:-4])))
def test_npz_archives_load_or_raise_rnncli_errors(data, key):
    loaded = only_rnncli_errors(load_array, io.BytesIO(data), "npz", key=key, name="fuzz.npz")
    if loaded is not None:
        assert loaded.array.nbytes <= BUDGET
        check_loaded(loaded, data)
    arrays = only_rnncli_errors(read_npz, io.BytesIO(data), "fuzz.npz", text_keys=("__rnncli__",))
    if arrays is not None:
        assert sum(a.nbytes for a in arrays.values()) <= BUDGET


@fuzz
@given(zip_archives())
def test_weights_archive_bytes_load_or_raise_rnncli_errors(data):
    """Hostile archive bytes through the weights loader."""
    only_rnncli_errors(load_weights, io.BytesIO(data), name="fuzz.npz")


TENSOR_NAMES = st.one_of(
    st.from_regex(r"(weight|bias)_(ih|hh)_l[0-2](_reverse)?", fullmatch=True),
    st.sampled_from(["weight_ih_l00", "weight_ih_l-1", "weight_ih_l0_forward", "w", "__rnncli__x"]),
)
tensor_arrays = st.builds(
    lambda shape, dtype: np.ones(shape, dtype),
    st.lists(st.integers(0, 5), max_size=3).map(tuple),
    st.sampled_from(["<f4", "<f8", "<f2", "<i4", "|b1", "<U2", "<c8"]),
)
JSON_JUNK = st.one_of(
    st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.none())
)
SETTING_VALUES = {
    "activation": st.one_of(st.sampled_from(["tanh", "relu", "swish", ""]), JSON_JUNK),
    "merge": st.one_of(st.sampled_from(["concat", "sum", "ave", "mul", "max"]), JSON_JUNK),
    "reverse": st.one_of(st.booleans(), JSON_JUNK),
    "clip": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), JSON_JUNK),
    "leak": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), JSON_JUNK),
}
metadata = st.one_of(
    st.fixed_dictionaries({}, optional=SETTING_VALUES).map(json.dumps),
    st.sampled_from(["[1]", "3", "null", '"tanh"', "{", "not json", ""]),
)


@st.composite
def weight_files(draw):
    """Structurally plausible weights: right and wrong names, shapes, dtypes and settings."""
    tensors = draw(st.dictionaries(TENSOR_NAMES, tensor_arrays, max_size=6))
    if draw(st.booleans()):
        tensors["__rnncli__"] = np.array(draw(metadata))
    buffer = io.BytesIO()
    np.savez(buffer, **tensors)
    return buffer.getvalue()


@fuzz
@given(weight_files())
def test_weight_files_load_or_raise_rnncli_errors(data):
    model = only_rnncli_errors(load_weights, io.BytesIO(data), name="w.npz")
    if model is not None:
        assert model.input_size >= 0 and all(units >= 0 for units in model.units)


def settings_file(**settings):
    buffer = io.BytesIO()
    ok = {"weight_ih_l0": np.zeros((4, 3), np.float32), "weight_hh_l0": np.zeros((4, 4), np.float32)}
    np.savez(buffer, **ok, __rnncli__=np.array(json.dumps(settings)))
    return buffer.getvalue()


def low_rank_weight_ih(shape):
    buffer = io.BytesIO()
    np.savez(buffer, weight_ih_l0=np.zeros(shape, np.float32), weight_hh_l0=np.zeros((4, 4), np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        settings_file(leak="x"),
        settings_file(clip="x"),
        settings_file(activation=["tanh"]),
        settings_file(reverse="yes"),
        low_rank_weight_ih(()),
        low_rank_weight_ih((4,)),
    ],
    ids=["leak-str", "clip-str", "activation-list", "reverse-str", "w_ih-0d", "w_ih-1d"],
)
def test_settings_of_the_wrong_type_and_flat_weights_are_weights_errors(data):
    """Found by the fuzzer (TypeError, IndexError) and fixed in weights.py: kept as regressions."""
    with pytest.raises(WeightsError, match=r"w\.npz: "):
        load_weights(io.BytesIO(data), name="w.npz")


def test_a_zip_bomb_is_refused_before_inflating():
    data = zip_bomb(zipfile.ZIP_DEFLATED, 4 * BUDGET)
    assert len(data) < BUDGET / 100  # it really is a bomb: it inflates a hundredfold and more
    with pytest.raises(RnnCliError, match="zip bomb"):
        load_array(io.BytesIO(data), "npz", name="bomb.npz")


def test_a_member_lying_about_its_size_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes(np.zeros((100, 3))))
    with pytest.raises(RnnCliError, match=r"fuzz\.npz\[x\]: (truncated|corrupt)"):
        load_array(io.BytesIO(lie_about_sizes(buffer.getvalue(), 64)), "npz", name="fuzz.npz")


def test_a_corrupt_deflate_stream_is_an_input_error():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes(np.arange(1000.0)))
    data = bytearray(buffer.getvalue())
    start = data.index(b"x.npy") + len("x.npy")
    data[start + 20 : start + 40] = bytes(20)  # zeros inside the compressed stream
    with pytest.raises(RnnCliError, match=r"fuzz\.npz\[x\]"):
        load_array(io.BytesIO(bytes(data)), "npz", name="fuzz.npz")


# --- the whole command over fuzzed files -------------------------------------------------------


fuzzed_files = st.one_of(
    any_npy.map(lambda d: ("x.npy", d)),
    csv_bytes.map(lambda d: ("x.csv", d)),
    zip_archives().map(lambda d: ("x.npz", d)),
    weight_files().map(lambda d: ("w.npz", d)),
)


@settings(fuzz, max_examples=max(20, EXAMPLES // 4))
@given(fuzzed_files)
def test_rnncli_run_over_fuzzed_files_fails_in_one_line(tmp_path_factory, named):
    name, data = named
    directory = tmp_path_factory.mktemp("run")
    (directory / name).write_bytes(data)
    out = directory / "out.npy"
    out.write_bytes(b"precious")
    args = ["run", str(SAMPLE_NPY), "--weights", str(directory / name)]
    if name != "w.npz":
        args = ["run", str(directory / name), "--units", "3"]
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, [*args, "-q", "-o", str(out)])
    assert not caught, [str(w.message) for w in caught]  # numpy's RuntimeWarnings would be stray stderr text
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".out.npy")]
    assert leftovers == []
    if result.exit_code:
        assert out.read_bytes() == b"precious"
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
