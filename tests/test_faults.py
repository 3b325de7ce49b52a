"""Faults from outside: a full disk, SIGINT/SIGTERM mid-run, a closed downstream pipe, a terminal on stdin.

The signal, pipe and terminal tests run the real command in a subprocess. Nothing here asserts on
timing: waits poll for a state (a temporary file appearing, a handler installed) with a generous
limit that only a hang would reach.
"""

from __future__ import annotations

import errno
import io
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli import io as rnncli_io
from rnncli.cli import main

PRECIOUS = b"precious bytes that must survive"
PATIENCE = 120  # seconds; reached only if something hangs
RNNCLI = [sys.executable, "-m", "rnncli"]


def parts(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def wait_for(condition, what):
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


# --- a full disk -------------------------------------------------------------------------------


class FullDisk:
    """A file that takes `room` bytes and then fails every write with ENOSPC, as a full disk does."""

    def __init__(self, raw, room):
        self._raw, self._room = raw, room

    def write(self, data):
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()


@pytest.fixture
def disk_fills_on(monkeypatch):
    """`disk_fills_on(name, room)`: the temporary file for output `name` fills after `room` bytes."""
    temporaries = {}
    real_create, real_fdopen = rnncli_io._create_exclusive, os.fdopen
    real_fallocate = getattr(os, "posix_fallocate", None)

    def create(path):
        fd = real_create(path)
        temporaries[fd] = os.path.basename(path)
        return fd

    def arm(name, room):
        def fdopen(fd, *args, **kwargs):
            raw = real_fdopen(fd, *args, **kwargs)
            return FullDisk(raw, room) if temporaries.get(fd, "").startswith(f".{name}.") else raw

        def fallocate(fd, offset, length):  # how a full disk stops an .npy computed in place
            if temporaries.get(fd, "").startswith(f".{name}.") and offset + length > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fallocate(fd, offset, length)

        monkeypatch.setattr(rnncli_io, "_create_exclusive", create)
        monkeypatch.setattr(os, "fdopen", fdopen)
        if real_fallocate is not None:
            monkeypatch.setattr(os, "posix_fallocate", fallocate)

    return arm


OUTPUTS = {"-o": "out.npy", "--save-weights": "w.npz", "--save-state": "s.npy", "--summary-json": "summary.json"}


@pytest.mark.parametrize("full", list(OUTPUTS.values()))
@pytest.mark.parametrize("room", [0, 100])
@pytest.mark.parametrize(
    "how", [[], ["--reverse"], ["--reverse", "mapped"]], ids=["read in blocks", "read whole", "computed in its file"]
)
def test_a_full_disk_changes_no_output(tmp_path, monkeypatch, sample_npy, disk_fills_on, full, room, how):
    """Whichever output hits ENOSPC, and wherever in it, every existing output is left as it was."""
    import rnncli.pipeline

    if "mapped" in how:  # the output .npy computed in its file, as large ones are
        monkeypatch.setattr(rnncli.pipeline, "IN_PLACE_MIN_BYTES", 0)
        how = how[:-1]
    monkeypatch.chdir(tmp_path)
    for name in OUTPUTS.values():
        (tmp_path / name).write_bytes(PRECIOUS)
    disk_fills_on(full, room)
    args = ["run", str(sample_npy), "--units", "8", "-q", *how]
    result = CliRunner().invoke(main, [*args, *(item for pair in OUTPUTS.items() for item in pair)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"rnncli: error: {full}: write failed (No space left on device); "
        "nothing was written and any existing file is unchanged\n"
    )
    for name in OUTPUTS.values():
        assert (tmp_path / name).read_bytes() == PRECIOUS, f"{name} changed although {full} could not be written"
    assert parts(tmp_path) == []


def test_without_a_full_disk_every_output_is_written(tmp_path, monkeypatch, sample_npy, disk_fills_on):
    """The control for the test above: the same run with room to spare replaces all four files."""
    monkeypatch.chdir(tmp_path)
    for name in OUTPUTS.values():
        (tmp_path / name).write_bytes(PRECIOUS)
    disk_fills_on("out.npy", 1 << 30)
    args = ["run", str(sample_npy), "--units", "8", "-q"]
    result = CliRunner().invoke(main, [*args, *(item for pair in OUTPUTS.items() for item in pair)])
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "out.npy").shape == (500, 8)
    assert all((tmp_path / name).read_bytes() != PRECIOUS for name in OUTPUTS.values())
    assert parts(tmp_path) == []


# --- SIGINT and SIGTERM against a real process -------------------------------------------------

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/PID/status (Linux)")


def handles_sigterm(pid):
    """Whether rnncli has installed its SIGTERM handler, i.e. the command is running (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except FileNotFoundError:
        pass
    return False


def assert_interrupted_quietly(proc, directory):
    _, stderr = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 130, stderr
    assert stderr.decode() == "rnncli: error: interrupted; no partial output was left\n"
    assert (directory / "out.npy").read_bytes() == PRECIOUS
    assert parts(directory) == []


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_waiting_for_stdin(tmp_path, signum):
    (tmp_path / "out.npy").write_bytes(PRECIOUS)
    proc = subprocess.Popen(
        [*RNNCLI, "run", "-", "-o", "out.npy"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(b"a,b\n1,2\n3,4\n")  # some rows; the pipe stays open, so rnncli waits for more
        proc.stdin.flush()
        wait_for(lambda: handles_sigterm(proc.pid), "rnncli to start")
        proc.send_signal(signum)
        assert_interrupted_quietly(proc, tmp_path)
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    """2 million timesteps: with 256 units a run takes many seconds, so a signal lands mid-run."""
    path = tmp_path_factory.mktemp("long") / "long.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2_000_000, 3)).astype(np.float32))
    return path


def test_an_interrupt_python_cannot_unwind_is_quiet_and_still_stops_the_run(tmp_path, monkeypatch, sample_npy):
    # A signal that lands in a weakref callback (as during an import) raises where Python can only
    # report "Exception ignored"; the run must stay quiet, keep going to its check, and commit nothing.
    from rnncli import cli, pipeline

    build_model = pipeline.build_model

    def interrupted_build(*args, **kwargs):
        class Thing:
            pass

        thing = Thing()
        alive = weakref.ref(thing, lambda _: cli._on_signal(signal.SIGINT, None))
        del thing  # the callback runs here; its KeyboardInterrupt cannot propagate
        assert alive() is None
        return build_model(*args, **kwargs)

    monkeypatch.setattr(pipeline, "build_model", interrupted_build)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own, not pytest's
    out = tmp_path / "out.npy"
    out.write_bytes(PRECIOUS)
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--units", "4", "-o", str(out)])
    assert result.exit_code == 130
    assert result.stderr == "rnncli: error: interrupted; no partial output was left\n"
    assert out.read_bytes() == PRECIOUS and parts(tmp_path) == []


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_the_output_is_being_written(tmp_path, long_input, signum):
    """A long .npy is written block by block: signal once the temporary file exists and is growing."""
    (tmp_path / "out.npy").write_bytes(PRECIOUS)
    proc = subprocess.Popen(
        [*RNNCLI, "run", str(long_input), "--units", "256", "-o", "out.npy", "--save-weights", "w.npz"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: parts(tmp_path) and handles_sigterm(proc.pid), "the temporary output file")
        temporary = tmp_path / parts(tmp_path)[0]
        wait_for(lambda: not temporary.exists() or temporary.stat().st_size > 128, "the first block of rows")
        assert proc.poll() is None, "the run ended before it could be interrupted; make the input longer"
        proc.send_signal(signum)
        assert_interrupted_quietly(proc, tmp_path)
        assert not (tmp_path / "w.npz").exists()
    finally:
        proc.kill()


# --- a closed downstream pipe ------------------------------------------------------------------


@pytest.fixture(scope="module")
def medium_input(tmp_path_factory):
    directory = tmp_path_factory.mktemp("medium")
    x = np.random.default_rng(1).standard_normal((5000, 3)).astype(np.float32)
    np.save(directory / "x.npy", x)
    np.savetxt(directory / "x.csv", x, delimiter=",")
    return directory


@pytest.mark.parametrize(
    "source, args, head",
    [
        ("x.npy", ["--to", "csv"], "head -1"),  # written block by block
        ("x.csv", ["--to", "csv"], "head -1"),  # read whole, one write
        ("x.npy", [], "head -c 100"),
        ("x.npy", ["--reverse"], "head -c 100"),
        ("x.npy", ["--return", "both"], "head -c 100"),
        ("x.npy", ["--to", "csv", "--summary-json", "s.json", "--save-weights", "w.npz"], "head -1"),
    ],
    ids=["csv in blocks", "csv whole", "npy in blocks", "npy whole", "npz", "with other outputs"],
)
def test_a_closed_pipe_ends_the_run_quietly(tmp_path, medium_input, source, args, head):
    """Through a real shell pipe: exit 0 (rnncli's own status, not head's), nothing at all on stderr."""
    command = shlex.join([*RNNCLI, "run", str(medium_input / source), "--units", "128", *args])
    script = f"{command} 2>err.txt | {head} >head.txt; echo ${{PIPESTATUS[0]}} >status.txt"
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=PATIENCE)
    assert (tmp_path / "status.txt").read_text().strip() == "0"
    assert (tmp_path / "err.txt").read_text() == ""
    received = (tmp_path / "head.txt").read_bytes()
    if head == "head -1":
        assert len(received.decode().strip().split(",")) == 128
    else:
        assert len(received) == 100
    assert parts(tmp_path) == []


def test_a_closed_pipe_stops_the_run_before_the_other_outputs(tmp_path, medium_input):
    """The reader left, so the run stops there (exit 0); files not yet written stay as they were."""
    (tmp_path / "w.npz").write_bytes(PRECIOUS)
    command = shlex.join(
        [*RNNCLI, "run", str(medium_input / "x.npy"), "--units", "64", "--to", "csv", "--save-weights", "w.npz"]
    )
    script = f"{command} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}} >status.txt"
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=PATIENCE)
    assert (tmp_path / "status.txt").read_text().strip() == "0"
    assert (tmp_path / "w.npz").read_bytes() == PRECIOUS
    assert parts(tmp_path) == []


# --- a terminal on stdin -----------------------------------------------------------------------


def read_until(fd, marker, what):
    seen = b""
    deadline = time.monotonic() + PATIENCE
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"gave up waiting for {what}; stderr so far: {seen!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"stderr closed before {what}: {seen!r}")
        seen += chunk
    return seen


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["", "-q"])
def test_a_terminal_on_stdin_gets_a_hint_then_its_rows_are_read(quiet):
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*RNNCLI, "run", "-", "--units", "4", *quiet],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    try:
        hint = read_until(proc.stderr.fileno(), b"Ctrl-D to end", "the hint")
        assert b"waiting for data on stdin" in hint
        assert proc.poll() is None, "rnncli did not wait for the terminal"
        os.write(controller, b"1,2\n3,4\n")
        os.write(controller, b"\x04")  # Ctrl-D at the start of a line: end of input
        stdout, _ = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0
        assert np.load(io.BytesIO(stdout)).shape == (2, 4)
    finally:
        proc.kill()
        os.close(controller)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize(
    ("args", "hint", "rows", "lines_out"),
    [
        (["run", "-", "--stream", "--units", "3"], b"waiting for CSV rows on stdin", b"1,2\n3,4\n", 2),
        (["batch", "--from-list", "-", "--out-dir", "out", "--units", "3"], b"waiting for paths on stdin", b"", 0),
    ],
    ids=["--stream", "--from-list -"],
)
def test_quiet_commands_reading_a_terminal_still_say_they_wait(tmp_path, args, hint, rows, lines_out):
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*RNNCLI, *args, "-q"], cwd=tmp_path, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(terminal)
    try:
        assert hint in read_until(proc.stderr.fileno(), b"Ctrl-D to end", "the hint")
        assert proc.poll() is None, "rnncli did not wait for the terminal"
        os.write(controller, rows + b"\x04")  # Ctrl-D at the start of a line: end of input
        stdout, _ = proc.communicate(timeout=PATIENCE)
        assert len(stdout.splitlines()) == lines_out and proc.returncode == 0
    finally:
        proc.kill()
        os.close(controller)


def test_a_pipe_on_stdin_gets_no_hint(sample_csv):
    proc = subprocess.run(
        [*RNNCLI, "run", "-", "--units", "4", "-q"], input=sample_csv.read_bytes(), capture_output=True, check=True
    )
    assert proc.stderr == b""
    assert np.load(io.BytesIO(proc.stdout)).shape == (500, 4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_named_pipe_is_read_once(tmp_path, suffix):
    """A FIFO (as `<(zcat x.npy.gz)` gives) cannot be opened twice or seeked: it is read whole, once."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    payload = io.BytesIO()
    np.save(payload, x) if suffix == ".npy" else np.savez(payload, x=x)
    fifo = tmp_path / f"in{suffix}"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*RNNCLI, "run", str(fifo), "--units", "3", "-q", "-o", "out.npy"], cwd=tmp_path, stderr=subprocess.PIPE
    )
    with open(fifo, "wb") as writer:  # blocks until rnncli opens the pipe
        writer.write(payload.getvalue())
    _, stderr = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, stderr
    assert np.load(tmp_path / "out.npy").shape == (6, 3)
