"""Every error path of `rnncli run`: exit code, a one-line message, and no output clobbered."""

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main

PRECIOUS = b"precious bytes that must survive"


def run_failing(tmp_path, *args, input=None):
    out = tmp_path / "out.npy"
    out.write_bytes(PRECIOUS)
    result = CliRunner().invoke(main, ["run", *map(str, args), "-o", str(out)], input=input)
    assert out.read_bytes() == PRECIOUS, "a failed run touched the existing output"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.npy")) == []
    return result


def one_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_file(tmp_path):
    result = run_failing(tmp_path, tmp_path / "nope.npy")
    assert result.exit_code == 1
    assert "nope.npy: no such file" in one_line(result)


def test_bad_shape_names_the_shape(tmp_path):
    np.save(tmp_path / "4d.npy", np.zeros((2, 2, 2, 2)))
    result = run_failing(tmp_path, tmp_path / "4d.npy")
    assert result.exit_code == 1
    assert "4-D array of shape (2, 2, 2, 2)" in one_line(result)


def test_bad_csv_cell_names_line_and_column(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    result = run_failing(tmp_path, tmp_path / "bad.csv")
    assert result.exit_code == 1
    assert "bad.csv: line 3, column 2: 'oops' is not a number" in one_line(result)


def test_garbage_stdin(tmp_path):
    result = run_failing(tmp_path, "-", input=b"\x00\x01\xff\xfe garbage")
    assert result.exit_code == 1
    assert "<stdin>" in one_line(result)


def test_empty_stdin(tmp_path):
    result = run_failing(tmp_path, "-", input=b"")
    assert result.exit_code == 1
    assert "<stdin>: no data" in one_line(result)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--units", "0"], "units must be positive"),
        (["--units", "abc"], "is not a size"),
        (["--activation", "swish"], "swish"),
        (["--return", "both", "--to", "npy"], "--return both writes two arrays"),
    ],
)
def test_bad_options_exit_2(tmp_path, sample_npy, args, fragment):
    result = run_failing(tmp_path, sample_npy, *args)
    assert result.exit_code == 2
    assert fragment in result.stderr


def test_usage_errors_from_rnncli_are_one_line(tmp_path, sample_npy):
    np.savez(tmp_path / "w.npz", weight_ih_l0=np.zeros((4, 3), np.float32), weight_hh_l0=np.zeros((4, 4), np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz", "--seed", "3")
    assert result.exit_code == 2
    assert "--seed shape random weights; they do not apply with --weights" in one_line(result)


def test_weights_that_disagree_with_the_data(tmp_path, sample_npy):
    np.savez(tmp_path / "w.npz", weight_ih_l0=np.zeros((4, 5), np.float32), weight_hh_l0=np.zeros((4, 4), np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz")
    assert result.exit_code == 1
    assert "take 5 input features but the data has 3" in one_line(result)


def test_weights_that_disagree_with_themselves(tmp_path, sample_npy):
    np.savez(tmp_path / "w.npz", weight_ih_l0=np.zeros((4, 3), np.float32), weight_hh_l0=np.zeros((5, 5), np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz")
    assert result.exit_code == 1
    assert "W_hh has shape (5, 5) but W_ih (4, 3) implies 4 units" in one_line(result)


def test_weights_that_disagree_with_options(tmp_path, sample_npy):
    np.savez(tmp_path / "w.npz", weight_ih_l0=np.zeros((4, 3), np.float32), weight_hh_l0=np.zeros((4, 4), np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz", "--units", "8")
    assert result.exit_code == 1
    assert "--units 8 but the file has 4" in one_line(result)


def test_memory_estimate_refuses_huge_models(tmp_path, sample_npy):
    result = run_failing(tmp_path, sample_npy, "--units", "2000000000")
    assert result.exit_code == 2
    assert "GiB for the weights alone" in one_line(result)


def test_output_directory_missing(tmp_path, sample_npy):
    result = CliRunner().invoke(main, ["run", str(sample_npy), "-o", str(tmp_path / "no" / "x.npy")])
    assert result.exit_code == 1
    assert "does not exist" in one_line(result)


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "run", str(tmp_path / "nope.npy")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "no such file" in result.stderr


def test_options_that_contradict_stored_settings(tmp_path, sample_npy):
    args = ["run", str(sample_npy), "--activation", "relu", "--save-weights", str(tmp_path / "w.npz")]
    CliRunner().invoke(main, args)
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz", "--activation", "tanh")
    assert result.exit_code == 1
    assert "the file says activation='relu' but the options say 'tanh'" in one_line(result)
