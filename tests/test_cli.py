"""`rnncli run` through click's CliRunner: data on stdout, summaries on stderr, every option."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from reference import seed_loop

from rnncli import load_weights
from rnncli.cli import main


def invoke(*args, input=None):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def npy(result):
    return np.load(io.BytesIO(result.stdout_bytes), allow_pickle=False)


def test_stdout_gets_npy_and_stderr_the_summary(sample_npy):
    result = invoke("run", sample_npy, "--units", 16)
    assert result.exit_code == 0
    out = npy(result)
    assert out.shape == (500, 16) and out.dtype == np.float32
    assert "input" in result.stderr and "(500, 3)" in result.stderr and "timesteps/s" in result.stderr
    assert b"rnncli run" not in result.stdout_bytes


def test_cli_output_equals_seed_loop_with_the_saved_weights(sample_npy, tmp_path):
    result = invoke(
        "run",
        sample_npy,
        "--units",
        12,
        "--dtype",
        "float64",
        "--save-weights",
        tmp_path / "w.npz",
        "-o",
        tmp_path / "out.npy",
        "-q",
    )
    assert result.exit_code == 0 and result.stderr == ""
    weights = np.load(tmp_path / "w.npz", allow_pickle=False)
    x = np.load(sample_npy).astype(np.float64)
    bias = weights["bias_ih_l0"] + weights["bias_hh_l0"]
    expected = seed_loop(x, weights["weight_ih_l0"], weights["weight_hh_l0"], bias)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-12, rtol=0)


def test_csv_stdin_final_state_as_csv(sample_csv, sample_npy):
    result = invoke("run", "-", "--units", 8, "--return", "final", "--to", "csv", input=sample_csv.read_bytes())
    assert result.exit_code == 0
    values = np.loadtxt(io.StringIO(result.stdout), delimiter=",")
    from_npy = npy(invoke("run", sample_npy, "--units", 8, "--return", "final"))
    assert values.shape == (8,)
    np.testing.assert_allclose(values, from_npy, atol=1e-6)


def test_npy_on_stdin_is_recognised(sample_npy):
    result = invoke("run", "-", "--units", 4, input=sample_npy.read_bytes())
    assert result.exit_code == 0 and npy(result).shape == (500, 4)
    assert "<stdin> · npy" in result.stderr


def test_return_modes_and_batch_input(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 20, 2)).astype(np.float32)
    np.save(tmp_path / "batch.npy", x)
    assert npy(invoke("run", tmp_path / "batch.npy", "--units", 5)).shape == (3, 20, 5)
    assert npy(invoke("run", tmp_path / "batch.npy", "--units", 5, "--return", "final")).shape == (3, 5)
    result = invoke("run", tmp_path / "batch.npy", "--units", 5, "--return", "both", "-o", tmp_path / "both.npz")
    both = np.load(tmp_path / "both.npz", allow_pickle=False)
    assert sorted(both.files) == ["final", "sequence"]
    np.testing.assert_array_equal(both["final"], both["sequence"][:, -1])
    assert result.exit_code == 0


def test_csv_output_file_round_trip(sample_npy, tmp_path):
    invoke("run", sample_npy, "--units", 6, "-o", tmp_path / "out.csv")
    invoke("run", sample_npy, "--units", 6, "-o", tmp_path / "out.npy")
    from_csv = np.loadtxt(tmp_path / "out.csv", delimiter=",", dtype=np.float32)
    np.testing.assert_array_equal(from_csv, np.load(tmp_path / "out.npy"))


def test_saved_weights_reproduce_the_run_bit_for_bit(sample_npy, tmp_path):
    first = invoke(
        "run",
        sample_npy,
        "--units",
        10,
        "--init",
        "torch",
        "--seed",
        3,
        "--activation",
        "relu",
        "--save-weights",
        tmp_path / "w.npz",
    )
    again = invoke("run", sample_npy, "--weights", tmp_path / "w.npz")
    assert again.exit_code == 0
    assert first.stdout_bytes == again.stdout_bytes
    assert load_weights(tmp_path / "w.npz").activation == "relu"
    assert f"weights {tmp_path / 'w.npz'}" in again.stderr


def test_seed_decides_the_numbers(sample_npy):
    a = invoke("run", sample_npy, "--units", 8, "--seed", 5).stdout_bytes
    b = invoke("run", sample_npy, "--units", 8, "--seed", 5).stdout_bytes
    c = invoke("run", sample_npy, "--units", 8, "--seed", 6).stdout_bytes
    default = invoke("run", sample_npy, "--units", 8).stdout_bytes
    assert a == b and a != c and default == invoke("run", sample_npy, "--units", 8, "--seed", 0).stdout_bytes


@pytest.mark.parametrize("init", ["keras", "torch", "uniform", "normal", "esn"])
def test_every_init_runs(sample_npy, init):
    result = invoke("run", sample_npy, "--units", 8, "--init", init)
    assert result.exit_code == 0 and np.isfinite(npy(result)).all()


def test_uniform_init_saturates_and_the_summary_says_so(sample_npy):
    result = invoke("run", sample_npy, "--units", 32, "--init", "uniform")
    assert "saturated" in result.stderr and "--init uniform" in result.stderr
    assert "warning" in result.stderr


def test_summary_json(sample_npy, tmp_path):
    result = invoke("run", sample_npy, "--units", 7, "-o", tmp_path / "o.npy", "--summary-json", tmp_path / "s.json")
    assert result.exit_code == 0
    facts = json.loads((tmp_path / "s.json").read_text())
    assert facts["input"]["shape"] == [500, 3] and facts["input"]["format"] == "npy"
    assert facts["model"]["units"] == [7] and facts["model"]["parameters"] == 7 * 3 + 7 * 7 + 2 * 7
    assert facts["model"]["init"] == "keras" and facts["model"]["seed"] == 0
    assert facts["output"]["items"] == [{"name": "sequence", "shape": [500, 7], "dtype": "float32"}]
    out = np.load(tmp_path / "o.npy")
    assert facts["output"]["stats"]["max"] == pytest.approx(float(out.max()))
    assert facts["timing"]["timesteps"] == 500 and facts["timing"]["timesteps_per_second"] > 0
    to_stdout = invoke("run", sample_npy, "--units", 7, "-o", tmp_path / "o2.npy", "--summary-json", "-", "-q")
    assert json.loads(to_stdout.stdout)["output"]["destination"] == str(tmp_path / "o2.npy")


def test_quiet_and_show(sample_npy):
    assert invoke("run", sample_npy, "--units", 4, "-q").stderr == ""
    shown = invoke("run", sample_npy, "--units", 20, "--show", "-q")
    assert "heatmap: units ↓ 20 × time → 500" in shown.stderr and "▀" in shown.stderr


def test_a_log_keeps_each_summary_row_on_one_line_however_long_the_path(sample_npy, tmp_path):
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "and-deeper" / "input-with-a-long-name.npy"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(sample_npy.read_bytes())
    out = tmp_path / "out.npy"
    process = subprocess.run(
        [sys.executable, "-m", "rnncli", "run", str(deep), "--units", "20", "--show", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    lines = re.sub(r"\x1b\[[0-9;]*m", "", process.stderr).splitlines()  # FORCE_COLOR=1 in CI colours a log
    assert any(line.split() == ["input", str(deep), "·", "npy", "·", "(500,", "3)", "float32"] for line in lines)
    assert any(str(out) in line and line.split()[0] == "output" for line in lines)
    heatmap = [line for line in lines if "▀" in line]
    assert heatmap and all(len(line) <= 80 for line in heatmap)


def test_terminal_gets_a_preview_not_binary(sample_npy, monkeypatch):
    monkeypatch.setattr("rnncli.cli._stdout_is_terminal", lambda: True)
    result = invoke("run", sample_npy, "--units", 4)
    assert result.exit_code == 0
    assert result.stdout_bytes == b""
    assert "no binary was written" in result.stderr and "sequence (500, 4) float32" in result.stderr
    as_text = invoke("run", sample_npy, "--units", 4, "--to", "csv")
    assert len(as_text.stdout.splitlines()) == 500


def test_nan_in_input_is_warned(tmp_path):
    x = np.ones((10, 2))
    x[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    result = invoke("run", tmp_path / "nan.npy", "--units", 3)
    assert result.exit_code == 0
    assert "1 NaN" in result.stderr and "output holds" in result.stderr


def test_dtype_float64_and_key(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((5, 2)), b=np.ones((6, 2), dtype=np.int32))
    result = invoke("run", tmp_path / "d.npz", "--key", "b", "--units", 3, "--dtype", "float64")
    assert npy(result).dtype == np.float64 and npy(result).shape == (6, 3)


def test_model_options_reach_the_model(sample_npy, tmp_path):
    result = invoke(
        "run",
        sample_npy,
        "--units",
        "6,4",
        "--bidirectional",
        "--merge",
        "sum",
        "--activation",
        "relu",
        "--no-bias",
        "--save-weights",
        tmp_path / "w.npz",
        "--return",
        "final",
    )
    model = load_weights(tmp_path / "w.npz")
    assert model.units == (6, 4) and model.directions == 2 and not model.has_bias and model.merge == "sum"
    assert npy(result).shape == (4,)


def test_state_round_trip_continues_exactly(sample_npy, tmp_path):
    x = np.load(sample_npy)
    np.save(tmp_path / "a.npy", x[:200])
    np.save(tmp_path / "b.npy", x[200:])
    whole = npy(invoke("run", sample_npy, "--units", 5, "--layers", 2))
    first = npy(invoke("run", tmp_path / "a.npy", "--units", 5, "--layers", 2, "--save-state", tmp_path / "s.npy"))
    assert np.load(tmp_path / "s.npy").shape == (2, 5)
    second = npy(invoke("run", tmp_path / "b.npy", "--units", 5, "--layers", 2, "--initial-state", tmp_path / "s.npy"))
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)


def test_python_dash_m_works(sample_npy):
    proc = subprocess.run(
        [sys.executable, "-m", "rnncli", "run", str(sample_npy), "--units", "3", "-q"], capture_output=True, check=True
    )
    assert np.load(io.BytesIO(proc.stdout)).shape == (500, 3)


def test_help_teaches_with_examples():
    result = invoke("run", "--help")
    assert "Examples:" in result.stdout and "--return" in result.stdout and "--init" in result.stdout


@pytest.mark.parametrize("fmt", ["npy", "csv", "npz"])
def test_closed_downstream_pipe_ends_quietly(sample_npy, fmt):
    command = [sys.executable, "-m", "rnncli", "run", str(sample_npy), "--units", "256", "--to", fmt]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "error" not in stderr


def test_state_of_mixed_layer_sizes_needs_npz(sample_npy, tmp_path):
    args = ["--units", "6,3", "--bidirectional", "--merge", "ave", "-o", tmp_path / "out.npy"]
    invoke("run", sample_npy, *args, "--save-state", tmp_path / "s.npz")
    assert sorted(np.load(tmp_path / "s.npz").files) == ["state_0", "state_1", "state_2", "state_3"]
    refused = invoke("run", sample_npy, *args, "--save-state", tmp_path / "s.npy")
    assert refused.exit_code == 1 and "cannot be one tensor" in refused.stderr
    assert not (tmp_path / "s.npy").exists()


def test_npz_state_continues_a_mixed_size_stack(sample_npy, tmp_path):
    x = np.load(sample_npy)
    np.save(tmp_path / "a.npy", x[:123])
    np.save(tmp_path / "b.npy", x[123:])
    whole = npy(invoke("run", sample_npy, "--units", "6,3"))
    first = npy(invoke("run", tmp_path / "a.npy", "--units", "6,3", "--save-state", tmp_path / "f.npz"))
    second = npy(invoke("run", tmp_path / "b.npy", "--units", "6,3", "--initial-state", tmp_path / "f.npz"))
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)


@pytest.mark.parametrize("extra", [[], ["--reverse"]], ids=["read in blocks", "read whole"])
def test_nan_and_inf_counts_are_facts_whatever_the_policy(tmp_path, extra):
    x = np.ones((20, 2), np.float32)
    x[3, 0], x[5, 1] = np.nan, np.inf
    np.save(tmp_path / "x.npy", x)
    args = ["run", tmp_path / "x.npy", "--units", 3, "--on-nan", "ignore", *extra, "-o", tmp_path / "o.npy"]
    result = invoke(*args, "--summary-json", "-")
    assert result.exit_code == 0 and "warning" not in result.stderr
    facts = json.loads(result.stdout)
    assert (facts["input"]["nan"], facts["input"]["inf"]) == (1, 1)
    assert facts["output"]["stats"]["nan"] > 0
    shown = invoke(*args)  # and the summary people read shows them, whatever the policy
    assert shown.exit_code == 0 and "warning" not in shown.stderr
    row = next(line for line in shown.stderr.splitlines() if line.split()[:1] == ["NaN/Inf"])
    assert "1 NaN and 1 Inf in the input" in row and f"{facts['output']['stats']['nan']:,} NaN" in row
