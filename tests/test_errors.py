"""Every error path of `rnncli run`: exit code, a one-line message, and no output clobbered."""

import io
import os
import signal
import subprocess
import sys
import time

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


# --- Ctrl-C and SIGTERM while the command starts ---------------------------------------------------

RNNCLI_SCRIPT = os.path.join(os.path.dirname(sys.executable), "rnncli")
STARTS = {"console script": [RNNCLI_SCRIPT], "python -m": [sys.executable, "-m", "rnncli"]}
INTERRUPTED = b"rnncli: error: interrupted; no partial output was left\n"
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/PID/status (Linux)")

# The console script rnncli's installer writes, which signals itself when the import of MODULE begins:
# a moment of start-up hit every time, not by timing.
SIGNALLING_SCRIPT = """
import builtins, os, sys
signum, module = int(sys.argv.pop(1)), sys.argv.pop(1)
real_import = builtins.__import__

def spy(name, *args, **kwargs):
    if name == module:
        os.kill(os.getpid(), signum)
    return real_import(name, *args, **kwargs)

builtins.__import__ = spy
from rnncli.cli import main
sys.exit(main())
"""


def catches_sigterm(pid):
    """Whether the process has a SIGTERM handler (rnncli's: Python sets none of its own), from /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (FileNotFoundError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@SIGNALS
@pytest.mark.parametrize("module", ["click", "numpy"], ids=["importing click", "inside the command"])
def test_an_interrupt_during_start_up_exits_130_with_one_line(tmp_path, signum, module):
    script = tmp_path / "rnncli"  # the console script's name: that is how rnncli knows it is the command
    script.write_text(SIGNALLING_SCRIPT)
    (tmp_path / "out.npy").write_bytes(PRECIOUS)
    command = [sys.executable, str(script), str(int(signum)), module, "run", "-", "-o", "out.npy"]
    proc = subprocess.run(command, cwd=tmp_path, input=b"1,2\n", capture_output=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (130, INTERRUPTED)
    assert (tmp_path / "out.npy").read_bytes() == PRECIOUS


@needs_proc
@SIGNALS
@pytest.mark.parametrize("start", STARTS.values(), ids=STARTS.keys())
def test_an_interrupt_at_any_moment_of_start_up_exits_130_once_rnncli_runs(tmp_path, start, signum):
    """A real signal after 0-80 ms. Once rnncli has its handler (seen in /proc before the signal is sent),
    the exit is 130 and one line; before that, Python itself is still starting and decides."""
    (tmp_path / "out.npy").write_bytes(PRECIOUS)
    handled = 0
    for delay in (0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, None):  # None: wait for the handler
        proc = subprocess.Popen(
            [*start, "run", "-", "--units", "64", "-o", "out.npy"],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            proc.stdin.write(b"1,2\n")  # rows, and the pipe stays open: rnncli waits for more
            proc.stdin.flush()
            if delay is None:
                deadline = time.monotonic() + 120
                while not catches_sigterm(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:
                time.sleep(delay)
            ours = catches_sigterm(proc.pid)
            proc.send_signal(signum)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # the signal reached no handler that acted: let the run end
                proc.stdin.close()
                proc.wait(timeout=120)
            stderr = proc.stderr.read()
        finally:
            proc.kill()
            proc.stdin.close()
            proc.stdout.close()
            proc.stderr.close()
        if ours:
            assert (proc.returncode, stderr) == (130, INTERRUPTED), (delay, stderr)
            handled += 1
        else:  # before rnncli's code ran: killed by the signal, or Python's own KeyboardInterrupt (1 in site)
            assert (proc.returncode, stderr) == (130, INTERRUPTED) or proc.returncode in (-signum, 1), (delay, stderr)
        assert (tmp_path / "out.npy").read_bytes() == PRECIOUS
    assert handled >= 1


def test_importing_rnncli_leaves_the_signal_handlers_alone():
    script = (
        "import signal, rnncli, rnncli.cli; "
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
        "signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout == "True True\n"


# --- outputs that are also inputs ------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("data.npy", np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32))
    np.savez("w.npz", weight_ih_l0=np.full((4, 3), 0.1, np.float32), weight_hh_l0=np.eye(4, dtype=np.float32))
    np.savetxt("lengths.csv", [6, 4])
    np.save("h0.npy", np.zeros((1, 2, 4), np.float32))
    os.symlink("data.npy", "link.npy")
    os.link("data.npy", "hard.npy")
    return {name: (tmp_path / name).read_bytes() for name in ("data.npy", "w.npz", "lengths.csv", "h0.npy")}


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "data.npy"], "-o data.npy is also the input"),
        (["-o", "link.npy"], "-o link.npy is also the input"),
        (["-o", "hard.npy"], "-o hard.npy is also the input"),
        (["-o", "w.npz"], "-o w.npz is also the --weights file"),
        (["--save-weights", "w.npz"], "--save-weights w.npz is also the --weights file"),
        (["--summary-json", "lengths.csv"], "--summary-json lengths.csv is also the --lengths file"),
        (["--save-state", "data.npy"], "--save-state data.npy is also the input"),
        (["-o", "h0.npy"], "-o h0.npy is also the --initial-state file"),
    ],
)
def test_an_output_that_is_also_an_input_is_refused_before_any_work(inputs, args, message):
    options = ["--weights", "w.npz", "--lengths", "lengths.csv", "--initial-state", "h0.npy"]
    result = CliRunner().invoke(main, ["run", "data.npy", *options, *args])
    assert result.exit_code == 2
    assert one_line(result) == f"rnncli: error: {message}; write the output to another file"
    assert {name: open(name, "rb").read() for name in inputs} == inputs


def test_the_saved_state_may_replace_the_initial_state_it_continues(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    np.save(tmp_path / "head.npy", x[:25])
    np.save(tmp_path / "tail.npy", x[25:])
    np.save(tmp_path / "x.npy", x)
    state, run = tmp_path / "state.npy", lambda *args: CliRunner().invoke(main, ["run", *map(str, args), "-q"])
    whole = tmp_path / "whole.npy"
    assert run(tmp_path / "x.npy", "--units", 5, "--save-state", state, "-o", whole).exit_code == 0
    expected = np.load(state)
    assert run(tmp_path / "head.npy", "--units", 5, "--save-state", state, "-o", tmp_path / "a.npy").exit_code == 0
    carried = run(tmp_path / "tail.npy", "--units", 5, "--initial-state", state, "--save-state", state, "-o", whole)
    assert carried.exit_code == 0, carried.stderr
    np.testing.assert_allclose(np.load(state), expected, rtol=0, atol=1e-6)


# --- state files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["state.csv", "state.txt", "state"])
def test_a_state_is_saved_only_as_npy_or_npz(tmp_path, sample_npy, name):
    result = run_failing(tmp_path, sample_npy, "--units", 4, "--save-state", tmp_path / name)
    assert result.exit_code == 2
    assert f"--save-state {tmp_path / name}: a state is saved as .npy" in one_line(result)
    assert "name the file .npy or .npz" in one_line(result)
    assert not (tmp_path / name).exists()


def test_a_hand_written_csv_initial_state_is_still_read(tmp_path, sample_npy):
    np.savetxt(tmp_path / "h0.csv", np.full((1, 4), 0.5), delimiter=",")
    args = ["run", str(sample_npy), "--units", "4", "--initial-state", str(tmp_path / "h0.csv"), "-q", "--to", "csv"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr


def test_an_initial_state_of_the_wrong_shape_names_its_file(tmp_path, sample_npy):
    np.save(tmp_path / "h0.npy", np.zeros((1, 1, 4), np.float32))
    result = run_failing(tmp_path, sample_npy, "--units", 4, "--initial-state", tmp_path / "h0.npy")
    assert result.exit_code == 1
    assert (
        f"--initial-state {tmp_path / 'h0.npy'}: shape (1, 1, 4) but the model over {sample_npy} starts from (1, 4) "
        "(layers*directions, units)" in one_line(result)
    )


# --- reservoir knobs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("--input-scaling", "nan"),
        ("--input-scaling", "inf"),
        ("--input-scaling", "0"),
        ("--spectral-radius", "nan"),
        ("--spectral-radius", "inf"),
        ("--clip", "nan"),
        ("--clip", "inf"),
        ("--leak", "nan"),
        ("--density", "nan"),
    ],
)
def test_reservoir_knobs_must_be_finite(tmp_path, sample_npy, option, value):
    result = run_failing(tmp_path, sample_npy, "--init", "esn", option, value)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in one_line(result)


@pytest.mark.parametrize("args", [["--input-scaling", "-0.5"], ["--spectral-radius", "0"]])
def test_meaningful_edge_values_of_the_knobs_still_run(sample_npy, args):
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--init", "esn", *args, "-q", "--to", "csv"])
    assert result.exit_code == 0 and np.isfinite(np.loadtxt(io.StringIO(result.stdout), delimiter=",")).all()


# --- messages that name the file -----------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths, message",
    [
        ("3.5\n6\n", "--lengths L: entry 1 is 3.5, not a whole number; give whole numbers of timesteps in 0..6"),
        ("-1\n6\n", "--lengths L: entry 1 is -1, outside 0..6 (the timesteps of D); give whole numbers"),
        ("6\nnan\n", "--lengths L: entry 2 is nan, not a whole number"),
        ("6\n", "--lengths L: 1 lengths for the 2 batch rows of D; give one length per batch row"),
        ("", "--lengths L: no data rows"),
    ],
)
def test_bad_lengths_name_their_file_and_entry(tmp_path, lengths, message):
    np.save(tmp_path / "d.npy", np.zeros((2, 6, 3), np.float32))
    (tmp_path / "l.csv").write_text(lengths)
    result = run_failing(tmp_path, tmp_path / "d.npy", "--lengths", tmp_path / "l.csv")
    assert result.exit_code == 1
    expected = message.replace("L", str(tmp_path / "l.csv")).replace(" D", f" {tmp_path / 'd.npy'}")
    assert expected in one_line(result)


def test_a_lengths_file_without_extension_suggests_no_data_input_option(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 6, 3), np.float32))
    (tmp_path / "lengths").write_text("")
    result = run_failing(tmp_path, tmp_path / "d.npy", "--lengths", tmp_path / "lengths")
    line = one_line(result)
    assert f"--lengths {tmp_path / 'lengths'}: unknown extension ''; save it as .npy or .csv" in line
    assert "--from" not in line and "stdin" not in line


def test_weights_for_other_data_name_both_shapes(tmp_path, sample_npy):
    np.savez(tmp_path / "w.npz", weight_ih_l0=np.zeros((4, 5), np.float32), weight_hh_l0=np.zeros((4, 4), np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz")
    assert "take 5 input features but the data has 3; give data with 5 features or other weights" in one_line(result)
    assert "(W_ih is (4, 5)" in one_line(result)


def test_nan_weights_are_named_as_the_cause_of_a_nan_output(tmp_path, sample_npy):
    w_ih = np.full((4, 3), 0.1, np.float32)
    w_ih[2, 1] = np.nan
    np.savez(tmp_path / "w.npz", weight_ih_l0=w_ih, weight_hh_l0=np.eye(4, dtype=np.float32))
    result = run_failing(tmp_path, sample_npy, "--weights", tmp_path / "w.npz", "--on-nan", "error")
    assert result.exit_code == 1
    line = one_line(result)
    assert f"{sample_npy}: the output holds " in line and "NaN and 0 Inf values and --on-nan error stops there" in line
    assert f"the weights {tmp_path / 'w.npz'} hold 1 NaN and 0 Inf values: use other weights" in line
    assert "large inputs" not in line


# --- the memory guard ----------------------------------------------------------------------------


def test_a_short_wide_csv_is_not_taken_for_a_long_one(tmp_path, monkeypatch):
    """2 rows × 200,000 columns: the file's size bounds its rows, so the guard does not assume 32,768 of them."""
    monkeypatch.setattr("rnncli.pipeline.memory_budget", lambda: 1 << 30)
    (tmp_path / "wide.csv").write_text(("1," * 199_999 + "1\n") * 2)
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "wide.csv"), "--units", 4, "-q", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert np.load(out).shape == (2, 4)


@pytest.mark.parametrize(("value", "code"), [("bogus", 2), ("numpy", 0), ("", 0)])
def test_the_engine_variable_takes_only_known_values(sample_npy, tmp_path, value, code):
    process = subprocess.run(
        [sys.executable, "-m", "rnncli", "run", str(sample_npy), "--units", "3", "-q", "-o", str(tmp_path / "o.npy")],
        env={**os.environ, "RNNCLI_ENGINE": value},
        capture_output=True,
        text=True,
    )
    assert process.returncode == code, process.stderr
    if code:
        assert process.stderr.strip() == (
            "rnncli: error: RNNCLI_ENGINE=bogus is not an engine; set it to auto or numpy, or unset it"
        )
        assert not (tmp_path / "o.npy").exists()
