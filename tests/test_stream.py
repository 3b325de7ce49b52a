"""`rnncli run --stream`: rows in, rows out, one at a time, equal to a whole-file run."""

import io
import os
import select
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main
from rnncli.errors import InputError
from rnncli.stream import numeric_rows

RNNCLI = [sys.executable, "-m", "rnncli"]


def invoke(*args, input=None):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def table(text):
    return np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)


@pytest.mark.parametrize(
    "options",
    [
        ["--units", 16],
        ["--units", "8,4"],
        ["--units", 12, "--layers", 3, "--activation", "relu", "--clip", 2, "--leak", 0.5, "--init", "torch"],
        ["--units", 64, "--layers", 2],
        ["--units", 16, "--layers", 2, "--dtype", "float64"],
    ],
)
def test_streamed_rows_equal_a_whole_file_run_bit_for_bit(sample_csv, options):
    streamed = invoke("run", "-", "--stream", *options, "-q", input=sample_csv.read_bytes())
    whole = invoke("run", sample_csv, *options, "--to", "csv", "-q")
    assert streamed.exit_code == 0 and streamed.stderr == ""
    assert table(streamed.stdout).shape == (500, int(str(options[1]).split(",")[-1]))
    assert streamed.stdout == whole.stdout  # the same digits: CSV writes enough of them to read back the same floats


def test_return_final_streams_the_running_state(sample_csv):
    streamed = invoke("run", "-", "--stream", "--units", "6,5", "--return", "final", input=sample_csv.read_bytes())
    sequence = invoke("run", "-", "--stream", "--units", "6,5", "-q", input=sample_csv.read_bytes())
    final = invoke("run", sample_csv, "--units", "6,5", "--return", "final", "--to", "csv", "-q")
    assert streamed.stdout == sequence.stdout  # a forward model's output row is its running top-layer state
    np.testing.assert_allclose(table(streamed.stdout)[-1], table(final.stdout)[0], rtol=0, atol=1e-6)
    assert "500 rows" in streamed.stderr and "µs per row" in streamed.stderr


def test_header_comments_and_tabs_are_read_like_a_file(tmp_path):
    text = "# sensor dump\na\tb\n1.5\t2\n\n# pause\n-3\t0.25  # trailing note\n4\t5\n"
    (tmp_path / "x.tsv").write_text(text)
    streamed = invoke("run", "-", "--stream", "--units", 3, "-q", input=text)
    whole = invoke("run", tmp_path / "x.tsv", "--units", 3, "--to", "csv", "-q")
    assert len(streamed.stdout.splitlines()) == 3
    np.testing.assert_allclose(table(streamed.stdout), table(whole.stdout), rtol=0, atol=1e-6)
    from_path = invoke("run", tmp_path / "x.tsv", "--stream", "--units", 3, "-q")
    assert from_path.stdout == streamed.stdout


def test_saved_state_continues_a_stream_exactly(sample_csv, tmp_path):
    lines = sample_csv.read_text().splitlines(keepends=True)
    header, body = lines[:1], lines[1:]
    whole = invoke("run", "-", "--stream", "--units", "7,7", "-q", input="".join(lines))
    first = invoke(
        "run", "-", "--stream", "--units", "7,7", "--save-state", tmp_path / "s.npy", "-q", input="".join(body[:200])
    )
    assert np.load(tmp_path / "s.npy").shape == (2, 7)
    rest = "".join(header + body[200:])
    second = invoke("run", "-", "--stream", "--units", "7,7", "--initial-state", tmp_path / "s.npy", "-q", input=rest)
    assert first.stdout + second.stdout == whole.stdout


def test_models_that_need_the_whole_sequence_cannot_stream(sample_csv, tmp_path):
    data = sample_csv.read_bytes()
    for flag in ("--bidirectional", "--reverse"):
        result = invoke("run", "-", "--stream", flag, input=data)
        assert result.exit_code == 2 and "needs the whole sequence" in result.stderr and result.stdout == ""
    invoke("run", sample_csv, "--units", 4, "--bidirectional", "--save-weights", tmp_path / "w.npz", "-q")
    from_weights = invoke("run", "-", "--stream", "--weights", tmp_path / "w.npz", input=data)
    assert from_weights.exit_code == 2 and "a bidirectional model" in from_weights.stderr


@pytest.mark.parametrize(
    "options",
    [["-o", "out.npy"], ["--to", "npy"], ["--return", "both"], ["--time-major"], ["--show"]],
)
def test_options_that_cannot_stream_are_usage_errors(options):
    result = invoke("run", "-", "--stream", *options, input="1,2\n")
    assert result.exit_code == 2 and options[0] in result.stderr and result.stdout == ""


def test_a_bad_row_stops_the_stream_after_the_good_ones(sample_csv):
    good = "".join(sample_csv.read_text().splitlines(keepends=True)[:4])
    result = invoke("run", "-", "--stream", "--units", 2, "-q", input=good + "1,2,x\n5,6,7\n")
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 3
    assert "<stdin>: line 5, column 3: 'x' is not a number" in result.stderr
    ragged = invoke("run", "-", "--stream", "-q", input="1,2,3\n4,5\n")
    assert ragged.exit_code == 1 and "line 2 has 2 values but the first data row (line 1) has 3" in ragged.stderr
    assert invoke("run", "-", "--stream", input="# nothing\n\n").exit_code == 1


def test_nan_rows_follow_the_on_nan_policy(sample_csv):
    good = "".join(sample_csv.read_text().splitlines(keepends=True)[:4])  # a header and three data rows
    text = good + "nan,0,1\n1,2,inf\n3,4,5\n"
    stopped = invoke("run", "-", "--stream", "--units", 2, "--on-nan", "error", "-q", input=text)
    assert stopped.exit_code == 1 and len(stopped.stdout.splitlines()) == 3  # the rows before the bad one are out
    assert stopped.stderr.count("\n") == 1 and "<stdin>: data row 4 holds NaN or Inf" in stopped.stderr
    warned = invoke("run", "-", "--stream", "--units", 2, "-q", input=text)
    assert warned.exit_code == 0 and len(warned.stdout.splitlines()) == 6
    assert warned.stderr.count("warning:") == 1 and "data row 4 holds NaN or Inf" in warned.stderr
    assert np.isnan(table(warned.stdout)[3:]).all()  # NaN propagates through the state
    ignored = invoke("run", "-", "--stream", "--units", 2, "--on-nan", "ignore", "-q", input=text)
    assert ignored.exit_code == 0 and ignored.stdout == warned.stdout and ignored.stderr == ""


def test_row_reader_yields_each_row_as_its_line_arrives():
    def lines():
        yield b"t,x\n"
        yield b"1,2\n"
        raise AssertionError("read past the row that was asked for")

    rows = numeric_rows(lines(), "<test>")
    np.testing.assert_array_equal(next(rows), [1.0, 2.0])
    with pytest.raises(InputError, match="line 2, column 1: 'a' is not a number"):
        list(numeric_rows([b"h,h\n", b"a,1\n"], "<test>"))


def _read_line(stream, seconds=60):
    """One line from a pipe; fails (rather than hangs) if none comes."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, "no output line while stdin is still open"
    return stream.readline()


def test_a_row_comes_out_before_stdin_is_closed(sample_csv):
    whole = table(invoke("run", sample_csv, "--units", 8, "--to", "csv", "-q").stdout)
    lines = sample_csv.read_text().splitlines(keepends=True)
    proc = subprocess.Popen(
        [*RNNCLI, "run", "-", "--stream", "--units", "8", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(lines[0].encode())  # the header row
        for i, line in enumerate(lines[1:6]):
            proc.stdin.write(line.encode())
            proc.stdin.flush()
            row = np.array(_read_line(proc.stdout).decode().split(","), dtype=np.float64)
            np.testing.assert_allclose(row, whole[i], rtol=0, atol=1e-6)
        assert proc.poll() is None  # still waiting for more rows
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == b"" and proc.stderr.read() == b""
    finally:
        proc.kill()


def test_an_endless_stream_ends_quietly_when_the_reader_stops():
    script = f'yes 1,2,3 | {" ".join(RNNCLI)} run - --stream --units 4 | head -n 3; echo "${{PIPESTATUS[1]}}" >&2'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, timeout=120, env={**os.environ})
    assert len(proc.stdout.splitlines()) == 3
    assert proc.stderr.decode().strip() == "0"  # rnncli's exit code, and nothing else on stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--save-state", "s.csv"], "--save-state s.csv: a state is saved as .npy"),
        (["--save-state", "x.csv"], "--save-state x.csv is also the input; write the output to another file"),
        (["--save-weights", "nodir/w.npz"], "nodir/w.npz: directory"),
        (["--initial-state", "h0"], "--initial-state h0: unknown extension ''; save it as .npy or .csv"),
    ],
)
def test_stream_outputs_and_state_files_are_checked_before_any_row(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "h0").write_text("0,0\n")
    result = invoke("run", "x.csv", "--stream", "--units", 2, *args)
    assert result.exit_code in (1, 2) and result.stdout == ""  # not a row written
    assert result.stderr.startswith(f"rnncli: error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert (tmp_path / "x.csv").read_text() == "1,2,3\n4,5,6\n" and not (tmp_path / "s.csv").exists()


def test_a_stream_initial_state_of_the_wrong_shape_names_its_file(tmp_path):
    np.save(tmp_path / "h0.npy", np.zeros((1, 3), np.float32))
    result = invoke("run", "-", "--stream", "--units", 2, "--initial-state", tmp_path / "h0.npy", input="1,2\n")
    assert result.exit_code == 1 and result.stdout == ""
    assert f"--initial-state {tmp_path / 'h0.npy'}: shape (1, 3) but the model over <stdin> starts from (1, 2)" in (
        result.stderr
    )
