"""Where outputs go: files are replaced atomically with their permissions kept; devices, FIFOs and descriptors
(/dev/null, `mkfifo`, /dev/stdout, bash's `-o >(gzip > x.gz)`) are written into, never replaced by a file.

Devices are made with mknod in a scratch directory (root only), never taken from /dev.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main
from rnncli.errors import OutputError
from rnncli.io import atomic_output, check_output_path, npy_in_place, sync_output, write_array, writes_in_place

PRECIOUS = b"precious bytes that must survive"
ARRAY = np.arange(12.0).reshape(4, 3)


class Reader(threading.Thread):
    """Reads a FIFO or a pipe to its end, as `cat` would on the other side."""

    def __init__(self, source: str | int) -> None:
        super().__init__(daemon=True)
        self.source, self.data = source, b""
        self.start()

    def run(self) -> None:
        with open(self.source, "rb") as fp:
            self.data = fp.read()

    def result(self) -> bytes:
        self.join(timeout=60)
        assert not self.is_alive(), "the reader never saw the end of the output"
        return self.data


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


def device(path, minor):
    """A character device of the `mem` driver (3: null, 7: full) at `path`, or a skip where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("mknod needs root")
    return path


@pytest.mark.parametrize("via_symlink", [False, True], ids=["fifo", "symlink to a fifo"])
def test_a_fifo_is_written_into_not_replaced(tmp_path, via_symlink):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "out"
    if via_symlink:
        target.symlink_to(fifo)
    else:
        target = fifo
    assert check_output_path(target) == str(tmp_path)
    reader = Reader(str(fifo))
    with atomic_output(target) as fp:
        write_array(fp, ARRAY, "npy")
    np.testing.assert_array_equal(npy(reader.result()), ARRAY)
    assert stat.S_ISFIFO(os.stat(target).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"fifo", target.name})


@pytest.mark.parametrize("name", ["/dev/fd/{}", "/proc/self/fd/{}", "stdout-like link"])
def test_a_pipe_descriptor_is_written_into(tmp_path, name):
    """What bash passes for `-o >(gzip > x.gz)`: /dev/fd/63, a pipe (and /dev/stdout is a link to /proc/self/fd/1)."""
    read_end, write_end = os.pipe()
    path = name.format(write_end)
    if name == "stdout-like link":
        path = tmp_path / "stdout"
        path.symlink_to(f"/proc/self/fd/{write_end}")
    try:
        assert writes_in_place(path)
        check_output_path(path)
        reader = Reader(read_end)
        with atomic_output(path) as fp:
            write_array(fp, ARRAY, "npy")  # numpy's tofile() needs a file position, which a pipe has not
            sync_output(fp)  # what `rnncli run` does to staged outputs: nothing to sync on a pipe
    finally:
        os.close(write_end)
    np.testing.assert_array_equal(npy(reader.result()), ARRAY)


def test_a_descriptor_of_a_file_is_written_at_its_offset(tmp_path):
    """`{ echo header; rnncli … -o /dev/stdout; } > f`: the output follows what the descriptor has written."""
    target = tmp_path / "log"
    with open(target, "wb") as log:
        log.write(b"before\n")
        log.flush()
        with atomic_output(f"/dev/fd/{log.fileno()}") as fp:
            fp.write(b"rnncli\n")
            sync_output(fp)
        log.write(b"after\n")
    assert target.read_bytes() == b"before\nrnncli\nafter\n"
    assert os.listdir(tmp_path) == ["log"]


def test_a_character_device_is_written_into(tmp_path):
    null = device(tmp_path / "null", 3)
    with atomic_output(null) as fp:
        write_array(fp, ARRAY, "npy")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    full = device(tmp_path / "full", 7)
    with pytest.raises(OutputError) as caught, atomic_output(full) as fp:
        fp.write(b"x" * 100_000)
    assert str(caught.value) == f"{full}: write failed (No space left on device); the output is incomplete"
    assert stat.S_ISCHR(os.stat(full).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["full", "null"]


def test_writes_in_place_tells_streams_from_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    assert writes_in_place(tmp_path / "fifo")
    assert writes_in_place(f"/dev/fd/{sys.stderr.fileno()}")
    for path in ("file", "link", "missing", "."):
        assert not writes_in_place(tmp_path / path), path


def test_sync_output_syncs_files_and_leaves_pipes_alone(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    with open(tmp_path / "file", "wb") as fp:
        sync_output(fp)
        assert synced == [fp.fileno()]
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb"), os.fdopen(write_end, "wb") as fp:
        sync_output(fp)
    assert len(synced) == 1


def test_an_output_inside_a_file_says_it_is_a_file(tmp_path):
    (tmp_path / "good.npy").write_bytes(PRECIOUS)
    for path in ("good.npy/x.npy", "good.npy/sub/x.npy"):
        with pytest.raises(OutputError) as caught:
            check_output_path(tmp_path / path)
        assert str(caught.value) == (
            f"{tmp_path / path}: {tmp_path / 'good.npy'} is a file, not a directory; choose another output path"
        )


@pytest.fixture
def ordinary_user(monkeypatch):
    """os.access as a user without root's override, who may write only files with a write bit."""
    if os.geteuid() == 0:
        monkeypatch.setattr(
            os, "access", lambda path, mode, **_: not mode & os.W_OK or bool(os.stat(path).st_mode & 0o200)
        )


def test_a_read_only_output_is_refused_before_the_run(tmp_path, monkeypatch, sample_npy, ordinary_user):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out.npy"
    target.write_bytes(PRECIOUS)
    target.chmod(0o444)
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--units", "2", "-q", "-o", "out.npy"])
    assert result.exit_code == 1
    assert result.stderr == "rnncli: error: out.npy: is read-only; chmod u+w it or choose another output\n"
    assert target.read_bytes() == PRECIOUS
    assert stat.S_IMODE(target.stat().st_mode) == 0o444


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(PRECIOUS)
    target.chmod(0o640)
    with atomic_output(target) as fp:
        fp.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    mask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "new.npy") as fp:
            fp.write(b"new")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.npy").stat().st_mode) == 0o644


# `rnncli run` end to end: staged outputs are synced only when they are files (fsync on a pipe fails with
# EINVAL), a CSV input's .npy goes to a stream header first, and stdout's write errors are one line.


def test_run_writes_into_a_fifo(tmp_path, sample_npy):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = Reader(str(fifo))
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--units", "2", "-q", "--to", "npy", "-o", str(fifo)])
    assert result.exit_code == 0, result.stderr
    assert npy(reader.result()).shape == (500, 2)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("to", ["--to npy", ""], ids=["--to npy", "npy by default, as on stdout"])
@pytest.mark.parametrize("source", ["sines.npy", "sines.csv"], ids=["npy, streamed", "csv, rows unknown"])
def test_run_writes_into_process_substitution(tmp_path, sample_npy, source, to):
    command = (
        f"{sys.executable} -m rnncli run {sample_npy.parent / source} --units 2 -q {to} -o >(cat > got.npy)"
        "; status=$?; wait $!; exit $status"
    )
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert np.load(tmp_path / "got.npy").shape == (500, 2)


def limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))


@pytest.mark.parametrize(
    "how, args",
    [("ulimit -f", ["--units", "64"]), ("full device", ["--units", "64"]), ("full device", ["--return", "final"])],
    ids=["file size limit", "full disk", "full disk, one small write"],
)
def test_a_failing_stdout_is_one_line(tmp_path, sample_npy, how, args):
    if how == "full device":
        stdout, limit, reason = device(tmp_path / "full", 7), None, "No space left on device"
    else:
        stdout, limit, reason = tmp_path / "out.npy", limit_file_size, "File too large"
    with open(stdout, "wb") as fp:
        proc = subprocess.run(
            [sys.executable, "-m", "rnncli", "run", str(sample_npy), *args, "-q"],
            stdout=fp,
            stderr=subprocess.PIPE,
            preexec_fn=limit,  # only sets a resource limit (no locks held: safe before exec)
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"rnncli: error: <stdout>: write failed ({reason}); the output is incomplete\n"


# --- an .npy sequence computed straight into its file -------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 7), (1, 1), (3, 0, 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_npy_filled_in_place_is_byte_for_byte_what_write_array_writes(tmp_path, shape, dtype):
    data = np.random.default_rng(len(shape)).normal(size=shape).astype(dtype)
    with open(tmp_path / "mapped.npy", "w+b") as fp, npy_in_place(fp, shape, dtype) as out:
        if out is not None:  # None only for no data at all
            out[...] = data
    if data.size:
        assert out is not None
    with open(tmp_path / "written.npy", "wb") as fp:
        write_array(fp, data, "npy")
    if out is not None:
        assert (tmp_path / "mapped.npy").read_bytes() == (tmp_path / "written.npy").read_bytes()
        np.testing.assert_array_equal(np.load(tmp_path / "mapped.npy"), data)


def test_only_an_empty_regular_file_open_for_reading_and_writing_is_filled_in_place(tmp_path):
    (tmp_path / "used.npy").write_bytes(b"x")
    with open(tmp_path / "used.npy", "r+b") as fp, npy_in_place(fp, (2, 2), "float32") as out:
        assert out is None  # not empty
    with open(tmp_path / "w.npy", "wb") as fp, npy_in_place(fp, (2, 2), "float32") as out:
        assert out is None  # write-only: cannot be mapped
        assert os.path.getsize(tmp_path / "w.npy") == 0  # and no space was reserved
    with npy_in_place(io.BytesIO(), (2, 2), "float32") as out:
        assert out is None  # not a file
    read, write = os.pipe()
    with os.fdopen(write, "wb") as fp, npy_in_place(fp, (2, 2), "float32") as out:
        assert out is None  # a pipe
    os.close(read)


def test_a_filesystem_that_cannot_reserve_space_gets_a_written_file(tmp_path, monkeypatch, sample_npy):
    """Where posix_fallocate is not supported (or absent), the output is written as usual."""

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    import rnncli.pipeline

    monkeypatch.setattr(rnncli.pipeline, "IN_PLACE_MIN_BYTES", 0)
    args = ["run", str(sample_npy), "--units", "8", "-q", "--reverse"]
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "mapped.npy")]).exit_code == 0
    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "written.npy")]).exit_code == 0
    assert (tmp_path / "mapped.npy").read_bytes() == (tmp_path / "written.npy").read_bytes()


@pytest.mark.parametrize(
    "model",
    [["--units", "16"], ["--units", "8", "--bidirectional"], ["--units", "8,4", "--merge", "ave", "--bidirectional"]],
)
@pytest.mark.parametrize("layout", [[], ["--time-major"]])
def test_run_computes_an_npy_sequence_into_its_file_with_the_bits_of_stdout(tmp_path, monkeypatch, model, layout):
    import rnncli.pipeline

    x = np.random.default_rng(3).normal(size=(6, 40, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mapped = []
    real = rnncli.pipeline.npy_in_place

    def spy(*args):
        context = real(*args)
        mapped.append(context)
        return context

    monkeypatch.setattr(rnncli.pipeline, "npy_in_place", spy)
    monkeypatch.setattr(rnncli.pipeline, "IN_PLACE_MIN_BYTES", 0)  # small outputs are written otherwise
    args = ["run", str(tmp_path / "x.npy"), *model, *layout, "--seed", "3", "-q"]
    to_file = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "y.npy")])
    to_stdout = CliRunner().invoke(main, [*args, "-o", "-"])
    assert to_file.exit_code == 0 and to_stdout.exit_code == 0, to_file.stderr + to_stdout.stderr
    assert len(mapped) == 1  # the file's temporary; stdout never is
    assert (tmp_path / "y.npy").read_bytes() == to_stdout.stdout_bytes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("smallest_mapped", [0, 1 << 60], ids=["mapped", "written"])
def test_an_error_after_the_run_leaves_no_part_file_and_the_old_output(tmp_path, monkeypatch, smallest_mapped):
    import rnncli.pipeline

    monkeypatch.setattr(rnncli.pipeline, "IN_PLACE_MIN_BYTES", smallest_mapped)
    x = np.full((3, 20, 4), 3e38, np.float32)  # overflows to a non-finite output under --activation linear
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.npy").write_bytes(PRECIOUS)
    args = ["run", str(tmp_path / "x.npy"), "--units", "8", "--activation", "linear", "--on-nan", "error", "-q"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 1, result.stderr
    assert (tmp_path / "y.npy").read_bytes() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_a_failed_run_writes_nothing_into_a_descriptor_even_one_that_could_be_mapped(tmp_path, monkeypatch):
    """`-o /dev/fd/N` on an empty file opened read-write (`1<>file`) is written into, not replaced, and so
    it is never computed into: a run refused after the forward pass leaves it empty."""
    import rnncli.pipeline

    monkeypatch.setattr(rnncli.pipeline, "IN_PLACE_MIN_BYTES", 0)
    np.save(tmp_path / "x.npy", np.full((3, 20, 4), 3e38, np.float32))  # linear outputs overflow
    args = ["run", str(tmp_path / "x.npy"), "--units", "8", "--activation", "linear", "--on-nan", "error", "-q"]
    with open(tmp_path / "out.npy", "w+b") as target:
        result = CliRunner().invoke(main, [*args, "--to", "npy", "-o", f"/dev/fd/{target.fileno()}"])
    assert result.exit_code == 1, result.stderr
    assert (tmp_path / "out.npy").read_bytes() == b""
