"""Readers, writers, sniffing and atomic outputs."""

import io
import os

import numpy as np
import pytest

from rnncli.errors import InputError, OutputError, UsageError
from rnncli.io import as_sequences, atomic_output, load_array, read_npz, sniff_delimiter, write_array


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_file_and_stream_agree(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", array)
    from_file = load_array(tmp_path / "a.npy")
    from_stream = load_array(io.BytesIO(npy_bytes(array)), name="<stdin>")
    assert from_file.fmt == from_stream.fmt == "npy"
    np.testing.assert_array_equal(from_file.array, array)
    np.testing.assert_array_equal(from_stream.array, array)


def test_fortran_order_and_big_endian_npy(tmp_path):
    array = np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3))
    np.save(tmp_path / "f.npy", array)
    np.testing.assert_array_equal(load_array(tmp_path / "f.npy").array, array)


def test_npz_single_array_and_key(tmp_path):
    np.savez(tmp_path / "one.npz", data=np.ones((3, 2)))
    np.savez(tmp_path / "two.npz", a=np.ones((3, 2)), b=np.zeros((4, 2)))
    assert load_array(tmp_path / "one.npz").key == "data"
    assert load_array(tmp_path / "two.npz", key="b").array.shape == (4, 2)
    with pytest.raises(InputError, match=r"holds 2 arrays \(a, b\); choose one with --key"):
        load_array(tmp_path / "two.npz")
    with pytest.raises(InputError, match="no array 'c'"):
        load_array(tmp_path / "two.npz", key="c")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,2,3\n4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
        ("a,b,c\n1,2,3\n4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
        ("# comment\n1\t2\n# another\n3\t4  # trailing\n", [[1, 2], [3, 4]]),
        ("x;y\n1.5;-2e3\n", [[1.5, -2000]]),
        ("1 2\n3 4\n", [[1, 2], [3, 4]]),
        ("value\n1\n2\n3\n", [[1], [2], [3]]),
        ("1,nan\n2,inf\n", [[1, np.nan], [2, np.inf]]),
    ],
)
def test_text_tables(text, expected):
    loaded = load_array(io.BytesIO(text.encode()), name="t.csv")
    assert loaded.fmt == "csv"
    np.testing.assert_array_equal(loaded.array, np.array(expected, dtype=np.float64))


def test_csv_file_with_header_matches_npy(sample_npy, sample_csv):
    np.testing.assert_array_equal(load_array(sample_csv).array.astype(np.float32), load_array(sample_npy).array)


def test_delimiter_sniffing():
    assert sniff_delimiter(["1,2", "3,4"]) == ","
    assert sniff_delimiter(["1\t2", "3\t4"]) == "\t"
    assert sniff_delimiter(["1 2", "3 4"]) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2\n3\n", r"line 2 has 1 columns but line 1 has 2"),
        ("1,2\n3,x\n", r"line 2, column 2: 'x' is not a number"),
        ("# only a comment\n", "no data rows"),
        ("a,b\n", "only a header row"),
    ],
)
def test_text_errors_name_line_and_column(text, message):
    with pytest.raises(InputError, match=message):
        load_array(io.BytesIO(text.encode()), fmt="csv", name="bad.csv")


def test_non_utf8_text_is_refused():
    with pytest.raises(InputError, match="byte 2 is not UTF-8"):
        load_array(io.BytesIO(b"1,\xff\xfe"), fmt="csv", name="junk.csv")


def test_sniffing_streams():
    assert load_array(io.BytesIO(npy_bytes(np.ones(3))), name="-").fmt == "npy"
    buffer = io.BytesIO()
    np.savez(buffer, x=np.ones(3))
    assert load_array(io.BytesIO(buffer.getvalue()), name="-").fmt == "npz"
    assert load_array(io.BytesIO(b"1,2\n"), name="-").fmt == "csv"
    with pytest.raises(InputError, match="no data"):
        load_array(io.BytesIO(b""), name="<stdin>")


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled array"):
        load_array(tmp_path / "obj.npy")


@pytest.mark.parametrize("dtype", [np.complex64, "U3", "S2"])
def test_non_real_dtypes_are_refused(tmp_path, dtype):
    np.save(tmp_path / "x.npy", np.zeros(3, dtype=dtype))
    with pytest.raises(InputError, match="not a real number type"):
        load_array(tmp_path / "x.npy")


def test_truncated_npy_and_absurd_header(tmp_path):
    data = npy_bytes(np.ones((100, 3)))
    (tmp_path / "cut.npy").write_bytes(data[:-10])
    with pytest.raises(InputError, match=r"truncated .npy: the header promises shape \(100, 3\)"):
        load_array(tmp_path / "cut.npy")
    header = data[: data.index(b"\n") + 1].replace(b"(100, 3)", b"(10**12,)".ljust(8))
    (tmp_path / "huge.npy").write_bytes(header.replace(b"10**12,", b"999999999999,"))
    with pytest.raises(InputError, match="npy"):
        load_array(tmp_path / "huge.npy")


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(InputError, match="is a directory"):
        load_array(tmp_path)
    (tmp_path / "x.parquet").write_bytes(b"x")
    with pytest.raises(InputError, match=r"unknown extension '\.parquet'.*--from"):
        load_array(tmp_path / "x.parquet")


@pytest.mark.parametrize("shape", [(), (2, 2, 2, 2)])
def test_shapes_outside_1_to_3_d_are_refused(shape):
    with pytest.raises(InputError, match="-D array of shape"):
        as_sequences(np.zeros(shape), "x.npy")


def test_as_sequences_shapes():
    assert as_sequences(np.arange(5), "s").shape == (5, 1)
    with pytest.raises(InputError, match="no timesteps"):
        as_sequences(np.zeros((0, 3)), "e.npy")


def test_csv_written_reads_back_exactly():
    for dtype in (np.float32, np.float64):
        array = np.random.default_rng(0).normal(size=(5, 3)).astype(dtype)
        buffer = io.BytesIO()
        write_array(buffer, array, "csv")
        back = load_array(io.BytesIO(buffer.getvalue()), fmt="csv").array.astype(dtype)
        np.testing.assert_array_equal(back, array)
    with pytest.raises(UsageError, match="CSV holds a 2-D table"):
        write_array(io.BytesIO(), np.zeros((2, 2, 2)), "csv")


def test_npz_with_metadata_string_only_where_allowed():
    buffer = io.BytesIO()
    np.savez(buffer, w=np.ones(2), meta=np.array('{"a": 1}'))
    arrays = read_npz(io.BytesIO(buffer.getvalue()), "w.npz", text_keys=("meta",))
    assert str(arrays["meta"]) == '{"a": 1}'
    with pytest.raises(InputError, match="not a real number type"):
        read_npz(io.BytesIO(buffer.getvalue()), "w.npz")


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError), atomic_output(target) as fp:
        fp.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.npy"]
    with atomic_output(target) as fp:
        fp.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.npy"]


def test_atomic_output_disk_full_leaves_nothing(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "out.npy"
    target.write_bytes(b"precious")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"No space left on device.*unchanged"), atomic_output(target) as fp:
        fp.write(b"data")
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.npy"]


@pytest.mark.parametrize("where", ["os.open returns", "os.fdopen returns"])
def test_an_interrupt_right_after_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch, where):
    """A signal arriving during the system call raises the instant it returns: the file then exists,
    but no variable holds its descriptor yet (CI once kept a `.part` file that way)."""
    target = tmp_path / "out.npy"
    target.write_bytes(b"precious")
    name = where.split()[0].split(".")[1]
    real = getattr(os, name)

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, name, interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as fp:
        fp.write(b"never")
    monkeypatch.undo()
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.npy"]


def test_atomic_output_refuses_missing_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist"), atomic_output(tmp_path / "nope" / "x.npy"):
        pass


def test_memory_budget_respects_a_container_limit(tmp_path, monkeypatch):
    from rnncli import io as rnncli_io

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(512 << 20) + "\n")
    usage.write_text(str(100 << 20) + "\n")
    monkeypatch.setattr(rnncli_io, "CGROUP_FILES", ((str(limit), str(usage)),))
    assert rnncli_io.memory_budget() == (512 - 100) << 20
    limit.write_text("max\n")
    unlimited = rnncli_io.memory_budget()
    assert unlimited > 0 and unlimited != (512 - 100) << 20
