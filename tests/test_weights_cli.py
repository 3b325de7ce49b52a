"""`rnncli run --weights` with framework files; --save-weights; `rnncli weights inspect|convert`; `rnncli info`."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main
from rnncli.weights import read_weights, to_state_dict

MODELS = Path(__file__).parent / "fixtures" / "models"
TOLERANCE = 1e-5


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(*args, input=None):
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return result


def one_line(result, code=1):
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnncli: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def expected(stem):
    with np.load(MODELS / f"{stem}.expected.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def x_of(tmp_path):
    def save(stem):
        path = tmp_path / f"{stem}.x.npy"
        np.save(path, expected(stem)["x"])
        return path

    return save


# --- every fixture through `rnncli run --weights` -------------------------------------------------

KERAS = {  # file -> (expected stem, options the file does not record)
    "keras_simple.keras": ("keras_simple", []),
    "keras_stacked.keras": ("keras_stacked", []),
    "keras_bi_sum.keras": ("keras_bi_sum", []),
    "keras_go_backwards.keras": ("keras_go_backwards", []),
    "keras_simple.weights.h5": ("keras_simple", ["--return", "final"]),
    "keras_bi_sum.weights.h5": ("keras_bi_sum", ["--merge", "sum", "--return", "final"]),
}
TORCH_AND_ONNX = {
    "torch_rnn1.npz": "torch_rnn1",
    "torch_rnn1.safetensors": "torch_rnn1",
    "torch_rnn1.onnx": "torch_rnn1",
    "torch_rnn2bi_nobias.npz": "torch_rnn2bi_nobias",
    "torch_rnn2bi_nobias.safetensors": "torch_rnn2bi_nobias",
    "torch_rnn2bi_nobias.onnx": "torch_rnn2bi_nobias",
    "onnx_rnn_hand.onnx": "onnx_rnn_hand",
    "torch_rnn3_time_major.onnx": "torch_rnn3_time_major",
}
TIME_MAJOR_GRAPHS = {"onnx_rnn_hand.onnx", "torch_rnn3_time_major.onnx"}  # graphs whose input is (T, B, F)


@pytest.mark.parametrize("name", sorted(KERAS))
def test_keras_files_run_as_keras_runs_them(name, x_of, tmp_path):
    stem, options = KERAS[name]
    result = ok("run", x_of(stem), "--weights", MODELS / name, *options, "-o", tmp_path / "out.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected(stem)["keras_output"], rtol=0, atol=TOLERANCE)
    assert f"weights {MODELS / name}" in result.stderr


@pytest.mark.parametrize("name", sorted(TORCH_AND_ONNX))
def test_torch_and_onnx_files_run_as_the_framework_ran_them(name, x_of, tmp_path):
    stem = TORCH_AND_ONNX[name]
    case = expected(stem)
    x = x_of(stem)
    flip = name in TIME_MAJOR_GRAPHS and not json.loads(str(case["config"]))["time_major"]
    if flip:  # a time-major graph runs 3-D data time-major: give them so
        np.save(x, np.load(x).transpose(1, 0, 2))
    ok(
        "run",
        x,
        "--weights",
        MODELS / name,
        "--return",
        "both",
        "-o",
        tmp_path / "out.npz",
        "--save-state",
        tmp_path / "state.npy",
        "-q",
    )
    with np.load(tmp_path / "out.npz") as out:
        sequence = out["sequence"].transpose(1, 0, 2) if flip else out["sequence"]
        np.testing.assert_allclose(sequence, case["sequence"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(out["final"], case["final"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(np.load(tmp_path / "state.npy"), case["state"], rtol=0, atol=TOLERANCE)


class FakeTensor:
    def __init__(self, array):
        self.array, self.dtype = array, "torch.float32"

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


@pytest.mark.parametrize("stem", ["torch_rnn1", "torch_rnn2bi_nobias"])
def test_pt_files_run_through_torch_load_weights_only(monkeypatch, stem, x_of, tmp_path):
    seen = []

    def load(fp, map_location=None, weights_only=False):
        assert weights_only is True
        seen.append(fp.read())
        tensors, _ = read_weights(MODELS / f"{stem}.npz")  # what torch.load gives for this file
        return OrderedDict((k, FakeTensor(v)) for k, v in tensors.items())

    monkeypatch.setitem(sys.modules, "torch", type(sys)("torch"))
    monkeypatch.setattr(sys.modules["torch"], "load", load, raising=False)
    monkeypatch.setattr(sys.modules["torch"], "__version__", "2.13.0+cpu", raising=False)
    ok("run", x_of(stem), "--weights", MODELS / f"{stem}.pt", "-o", tmp_path / "out.npy", "-q")
    assert seen == [(MODELS / f"{stem}.pt").read_bytes()]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected(stem)["sequence"], atol=TOLERANCE)


def test_pt_without_torch_is_one_line(monkeypatch, x_of):
    monkeypatch.setitem(sys.modules, "torch", None)
    line = one_line(invoke("run", x_of("torch_rnn1"), "--weights", MODELS / "torch_rnn1.pt"))
    assert "torch_rnn1.pt" in line and "weights_only=True" in line and ".safetensors" in line


# --- what the model's own file decides, and what the options may say -------------------------------


def test_a_keras_model_decides_the_output_unless_return_is_given(x_of, tmp_path):
    x = x_of("keras_simple")
    ok("run", x, "--weights", MODELS / "keras_simple.keras", "-o", tmp_path / "own.npy", "-q")
    ok("run", x, "--weights", MODELS / "keras_simple.keras", "--return", "sequence", "-o", tmp_path / "seq.npy", "-q")
    ok("run", x, "--weights", MODELS / "torch_rnn1.npz", "-o", tmp_path / "torch.npy", "-q")
    assert np.load(tmp_path / "own.npy").shape == (2, 4)  # return_sequences=False
    assert np.load(tmp_path / "seq.npy").shape == (2, 6, 4)
    assert np.load(tmp_path / "torch.npy").shape == (2, 6, 5)  # everything else: the sequence
    np.testing.assert_array_equal(np.load(tmp_path / "seq.npy")[:, -1], np.load(tmp_path / "own.npy"))


def test_options_must_agree_with_what_the_file_records(x_of, tmp_path):
    x = x_of("keras_simple")
    line = one_line(invoke("run", x, "--weights", MODELS / "keras_simple.keras", "--activation", "relu"))
    assert "the file says activation='tanh' but the options say 'relu'" in line
    line = one_line(invoke("run", x_of("keras_bi_sum"), "--weights", MODELS / "keras_bi_sum.keras", "--merge", "ave"))
    assert "merge='sum'" in line
    line = one_line(invoke("run", x_of("onnx_rnn_hand"), "--weights", MODELS / "onnx_rnn_hand.onnx", "--clip", "2"))
    assert "clip=0.8" in line
    ok(
        "run",
        x_of("onnx_rnn_hand"),
        "--weights",
        MODELS / "onnx_rnn_hand.onnx",
        "--clip",
        "0.8",
        "-o",
        tmp_path / "a.npy",
    )
    # a PyTorch state_dict does not record the nonlinearity: the option decides
    ok(
        "run",
        x_of("torch_rnn1"),
        "--weights",
        MODELS / "torch_rnn1.safetensors",
        "--activation",
        "relu",
        "-o",
        tmp_path / "r.npy",
    )
    assert np.load(tmp_path / "r.npy").min() >= 0
    line = one_line(invoke("run", x_of("torch_rnn1"), "--weights", MODELS / "torch_rnn1.onnx", "--units", "7"))
    assert "--units 7 but the file has 5" in line


def test_weights_h5_needs_the_settings_it_does_not_store(x_of):
    line = one_line(invoke("run", x_of("keras_bi_sum"), "--weights", MODELS / "keras_bi_sum.weights.h5"))
    assert (
        "keras_bi_sum.weights.h5" in line and "no order of the layers chains their shapes" in line and "--merge" in line
    )


def test_a_time_major_onnx_graph_runs_3d_data_time_major(x_of, tmp_path):
    """nn.RNN's default batch_first=False exports a graph that takes (T, B, F): rnncli reads 3-D data so."""
    x, weights = x_of("torch_rnn3_time_major"), MODELS / "torch_rnn3_time_major.onnx"
    case = expected("torch_rnn3_time_major")  # x (T, B, F) as torch took it
    result = ok("run", x, "--weights", weights, "-o", tmp_path / "y.npy", "--summary-json", tmp_path / "s.json")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), case["sequence"], rtol=0, atol=TOLERANCE)  # (T, B, H)
    assert "(6, 2, 3) float32 · time-major (from the ONNX graph)" in result.stderr
    facts = json.loads((tmp_path / "s.json").read_text())
    assert facts["input"]["layout"] == "time-major" and facts["input"]["layout_from"] == "the ONNX graph"
    ok("run", x, "--weights", weights, "--time-major", "-o", tmp_path / "flag.npy", "-q")  # says the same
    np.testing.assert_array_equal(np.load(tmp_path / "flag.npy"), np.load(tmp_path / "y.npy"))
    np.save(tmp_path / "one.npy", case["x"][:, 1])  # one (T, F) sequence: no batch axis to place
    single = ok("run", tmp_path / "one.npy", "--weights", weights, "-o", tmp_path / "one_y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "one_y.npy"), case["sequence"][:, 1], rtol=0, atol=TOLERANCE)
    assert "time-major" not in single.stderr


def test_a_batch_runs_a_time_major_graph_time_major(x_of, tmp_path):
    x = x_of("torch_rnn3_time_major")
    ok("batch", x, "--out-dir", tmp_path / "out", "--weights", MODELS / "torch_rnn3_time_major.onnx", "-q")
    written = np.load(tmp_path / "out" / x.name)
    np.testing.assert_allclose(written, expected("torch_rnn3_time_major")["sequence"], rtol=0, atol=TOLERANCE)


def test_saved_and_converted_time_major_models_keep_their_layout(x_of, tmp_path):
    x, weights = x_of("torch_rnn3_time_major"), MODELS / "torch_rnn3_time_major.onnx"
    ok("run", x, "--weights", weights, "--save-weights", tmp_path / "w.npz", "-o", tmp_path / "a.npy", "-q")
    again = ok("run", x, "--weights", tmp_path / "w.npz", "-o", tmp_path / "b.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert "time-major (from the weights file)" in again.stderr
    converted = ok("weights", "convert", weights, tmp_path / "m.onnx")
    assert "warning" not in converted.stderr
    ok("run", x, "--weights", tmp_path / "m.onnx", "-o", tmp_path / "c.npy", "-q")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "c.npy"))
    keras = ok("weights", "convert", weights, tmp_path / "m.keras")
    assert "Keras models take batch-first" in keras.stderr and "--time-major" in keras.stderr


def test_an_initial_state_the_graph_takes_as_input_is_warned_about(x_of, tmp_path):
    x, weights = x_of("torch_rnn2_h0_input"), MODELS / "torch_rnn2_h0_input.onnx"
    case = expected("torch_rnn2_h0_input")
    zeros = ok("run", x, "--weights", weights, "-q", "-o", tmp_path / "zeros.npy")
    assert "the graph takes the initial state as input 'h0'" in zeros.stderr and "--initial-state FILE" in zeros.stderr
    np.testing.assert_allclose(np.load(tmp_path / "zeros.npy"), case["sequence_from_zeros"], rtol=0, atol=TOLERANCE)
    np.save(tmp_path / "h0.npy", case["initial_state"])
    ok("run", x, "--weights", weights, "--initial-state", tmp_path / "h0.npy", "-q", "-o", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), case["sequence"], rtol=0, atol=TOLERANCE)
    inspected = ok("weights", "inspect", weights)
    assert "input 'h0'" in inspected.stdout


def test_an_initial_state_the_graph_holds_is_applied(x_of, tmp_path):
    x, weights = x_of("torch_rnn2_h0_constant"), MODELS / "torch_rnn2_h0_constant.onnx"
    case = expected("torch_rnn2_h0_constant")
    result = ok("run", x, "--weights", weights, "--return", "both", "-o", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as out:
        np.testing.assert_allclose(out["sequence"], case["sequence"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(out["final"], case["final"], rtol=0, atol=TOLERANCE)
    assert "initial state from the weights file" in result.stderr and "warning" not in result.stderr
    np.save(tmp_path / "zeros.npy", np.zeros_like(case["initial_state"]))
    given = ok("run", x, "--weights", weights, "--initial-state", tmp_path / "zeros.npy", "-o", tmp_path / "z.npy")
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), case["sequence_from_zeros"], rtol=0, atol=TOLERANCE)
    assert "initial state from" not in given.stderr
    saved = ok("run", x, "--weights", weights, "--save-weights", tmp_path / "w.npz", "-q", "-o", tmp_path / "a.npy")
    assert "does not keep the initial state" in saved.stderr
    np.save(tmp_path / "three.npy", np.zeros((3, 6, 3), np.float32))  # the graph's state is for 2 sequences
    line = one_line(invoke("run", tmp_path / "three.npy", "--weights", weights))
    assert "the initial state" in line and "torch_rnn2_h0_constant.onnx" in line and "(3, 4)" in line


def test_every_save_weights_says_the_initial_state_is_not_kept(x_of, tmp_path):
    """run, run --stream and batch save the same file, and all three say what it leaves out."""
    x, weights = x_of("torch_rnn2_h0_constant"), MODELS / "torch_rnn2_h0_constant.onnx"
    case = expected("torch_rnn2_h0_constant")
    np.savetxt(tmp_path / "rows.csv", case["x"][0], delimiter=",")
    np.save(tmp_path / "h0.npy", case["initial_state"][:, 0])
    stream = ["run", tmp_path / "rows.csv", "--stream", "--initial-state", tmp_path / "h0.npy"]
    batch = ["batch", x, "--out-dir", tmp_path / "out"]
    run = ["run", x, "-o", tmp_path / "y.npy"]
    for k, command in enumerate([run, stream, batch]):
        saved = ok(*command, "--weights", weights, "--save-weights", tmp_path / f"w{k}.npz", "-q")
        assert saved.stderr.count("does not keep the initial state") == 1, (command[0:3], saved.stderr)
        with np.load(tmp_path / f"w{k}.npz") as written, np.load(tmp_path / "w0.npz") as first:
            assert sorted(written) == sorted(first)
            assert all(np.array_equal(written[name], first[name]) for name in first)


# --- the run summary ------------------------------------------------------------------------------


def plain(text):
    """Text without the colours rich adds under FORCE_COLOR."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def model_row(result):
    (row,) = [line for line in plain(result.stderr).splitlines() if line.split()[:1] == ["model"]]
    return " ".join(row.split()[1:])


def test_the_summary_names_what_differs_between_layers(x_of, tmp_path):
    args = ["run", x_of("keras_mixed"), "--weights", MODELS / "keras_mixed.keras", "-o", tmp_path / "y.npy"]
    result = ok(*args, "--summary-json", tmp_path / "s.json")
    assert model_row(result) == (
        "4 layers × 8 units · relu, sigmoid, softsign, elu · layer 2 reversed, layers 3–4 bidirectional (ave, concat)"
        " · layer 4 no bias · 760 parameters · float32"  # Keras's count_params(): one bias per cell
    )
    facts = json.loads((tmp_path / "s.json").read_text())
    assert [part["merge"] for part in facts["model"]["parts"]] == [None, None, "ave", "concat"]


MODEL_ROWS = {  # the options, or weights, and the summary's model row
    "one layer": (["--units", "64"], "1 layer × 64 units · tanh · 4,416 parameters · float32"),
    "settings shared by all layers": (
        ["--units", "4", "--layers", "2", "--bidirectional", "--merge", "sum", "--no-bias", "--clip", "0.5"],
        "2 layers × 4 units, bidirectional (sum) · tanh, no bias, clip 0.5 · 120 parameters · float32",
    ),
    "reversed": (
        ["--units", "5,3", "--reverse", "--leak", "0.5"],
        "2 layers × 5,3 units, reversed in time · tanh, leak 0.5 · 80 parameters · float32",
    ),
    "onnx": (["--weights", MODELS / "torch_rnn1.onnx"], "1 layer × 5 units · tanh · 50 parameters · float32"),
    "keras parts": (
        ["--weights", MODELS / "keras_stacked.keras"],
        "2 layers × 6,4 units · relu, tanh · layer 1 no bias · 98 parameters · float32",
    ),
}


@pytest.mark.parametrize("case", sorted(MODEL_ROWS))
def test_the_model_row_is_short_where_layers_agree(case, sample_npy, tmp_path):
    args, row = MODEL_ROWS[case]
    assert model_row(ok("run", sample_npy, *args, "-o", tmp_path / "y.npy")) == row


def test_a_log_keeps_summary_rows_whole_even_with_force_color(tmp_path, sample_npy):
    """rich counts FORCE_COLOR as a terminal; only a real terminal wraps (rows) and sets the drawing width."""
    deep = tmp_path
    while len(str(deep)) < 3800:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    (deep / "in.npy").write_bytes(sample_npy.read_bytes())
    env = {**os.environ, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "80"}
    command = [sys.executable, "-m", "rnncli", "run", str(deep / "in.npy"), "--units", "20", "--show"]
    process = subprocess.run([*command, "-o", str(tmp_path / "y.npy")], capture_output=True, text=True, env=env)
    assert process.returncode == 0, process.stderr
    lines = plain(process.stderr).splitlines()
    assert "\x1b[" in process.stderr  # coloured, as asked
    assert any(
        line.split() == ["input", str(deep / "in.npy"), "·", "npy", "·", "(500,", "3)", "float32"] for line in lines
    )
    heatmap = [line for line in lines if "▀" in line]
    assert heatmap and all(len(line) <= 80 for line in heatmap)


class Writer:
    """A stream with no isatty (a logging handler's, say)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


@pytest.mark.parametrize("kind", ["pipe", "no isatty", "closed"])
def test_text_for_a_stream_that_is_no_terminal_is_never_wrapped(kind, monkeypatch):
    from rnncli.summary import _UNWRAPPED_WIDTH, text_console

    stream = Writer() if kind == "no isatty" else io.StringIO()
    if kind == "closed":
        stream.close()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then calls it a terminal
    assert text_console().width == _UNWRAPPED_WIDTH


# --- --save-weights, convert, load: the same arrays, the same outputs --------------------------------


@pytest.mark.parametrize(
    "name", ["keras_stacked.keras", "keras_simple.keras", "keras_go_backwards.keras", "onnx_rnn_hand.onnx"]
)
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_saved_weights_alone_repeat_the_run_bit_for_bit(name, suffix, x_of, tmp_path):
    stem = name.split(".")[0]
    x, saved = x_of(stem), tmp_path / f"saved{suffix}"
    first = ok("run", x, "--weights", MODELS / name, "--save-weights", saved, "-o", tmp_path / "a.npy")
    assert "weights →" in first.stderr  # the summary names what was saved
    ok("run", x, "--weights", saved, "-o", tmp_path / "b.npy", "-q")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_random_weights_saved_as_safetensors_repeat_the_run(sample_npy, tmp_path):
    ok(
        "run",
        sample_npy,
        "--units",
        "6,4",
        "--activation",
        "elu",
        "--seed",
        "5",
        "--save-weights",
        tmp_path / "w.safetensors",
        "-o",
        tmp_path / "a.npy",
    )
    ok("run", sample_npy, "--weights", tmp_path / "w.safetensors", "-o", tmp_path / "b.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    from safetensors import safe_open

    with safe_open(tmp_path / "w.safetensors", framework="np") as f:
        assert json.loads(f.metadata()["__rnncli__"])["activation"] == "elu"
        assert sorted(f.keys()) == sorted(
            f"{k}_l{i}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for i in (0, 1)
        )


def test_save_convert_load_chain_keeps_every_array(sample_npy, tmp_path):
    """run --save-weights → convert to every format → run --weights: identical tensors and outputs."""
    ok(
        "run",
        sample_npy,
        "--units",
        "5",
        "--bidirectional",
        "--merge",
        "ave",
        "--activation",
        "softsign",
        "--seed",
        "2",
        "--save-weights",
        tmp_path / "a.npz",
        "-o",
        tmp_path / "a.npy",
        "-q",
    )
    chain = ["a.npz", "b.safetensors", "c.onnx", "d.keras", "e.npz"]
    for source, target in zip(chain, chain[1:]):
        converted = ok("weights", "convert", tmp_path / source, tmp_path / target)
        assert converted.stdout == "" and f"({target.split('.', 1)[1]})" in converted.stderr
    original, _ = read_weights(tmp_path / "a.npz")
    final, _ = read_weights(tmp_path / "e.npz")
    from rnncli.weights import load_weights

    onnx_tensors = to_state_dict(load_weights(tmp_path / "c.onnx"))
    for key in original:
        np.testing.assert_array_equal(original[key], onnx_tensors[key])
        if not key.startswith("bias_"):  # Keras keeps one bias (b_ih + b_hh); the weights pass untouched
            np.testing.assert_array_equal(original[key], final[key])
    for name in chain[1:]:
        ok("run", sample_npy, "--weights", tmp_path / name, "-o", tmp_path / "again.npy", "-q")
        np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), np.load(tmp_path / "a.npy"))


def test_exported_onnx_runs_in_onnxruntime(tmp_path, x_of):
    import onnxruntime as ort  # the test extra has it

    ok("weights", "convert", MODELS / "keras_stacked.keras", tmp_path / "m.onnx")
    x = expected("keras_stacked")["x"]
    y, final = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, expected("keras_stacked")["keras_output"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(final, y[:, -1], rtol=0, atol=TOLERANCE)


def test_convert_refuses_what_the_target_cannot_hold(sample_npy, tmp_path):
    ok(
        "run",
        sample_npy,
        "--units",
        "4",
        "--clip",
        "0.5",
        "--leak",
        "0.5",
        "--save-weights",
        tmp_path / "w.npz",
        "-q",
        "-o",
        tmp_path / "o.npy",
    )
    for target in ("m.keras", "m.onnx", "m.weights.h5"):
        line = one_line(invoke("weights", "convert", tmp_path / "w.npz", tmp_path / target))
        assert str(tmp_path / target) in line and "cannot hold this model" in line
        assert not (tmp_path / target).exists()
    assert "does not write .pt" not in one_line(invoke("weights", "convert", tmp_path / "w.npz", tmp_path / "m.pt"), 2)
    assert "--to" in one_line(invoke("weights", "convert", tmp_path / "w.npz", tmp_path / "m.bin"), 2)


def test_convert_names_the_settings_a_weights_h5_does_not_keep(tmp_path):
    result = ok("weights", "convert", MODELS / "keras_bi_sum.keras", tmp_path / "w.weights.h5")
    assert "load it with --merge sum" in result.stderr and "--return final" in result.stderr


def test_save_weights_only_writes_what_it_can_reload(sample_npy, tmp_path):
    line = one_line(invoke("run", sample_npy, "--save-weights", tmp_path / "w.onnx", "-o", tmp_path / "o.npy"), 2)
    assert "rnncli weights convert" in line and not (tmp_path / "o.npy").exists()


# --- hostile weight files: one line, exit 1 -------------------------------------------------------


def cut(path, tmp_path, name):
    data = path.read_bytes()
    target = tmp_path / name
    target.write_bytes(data[: len(data) // 2])
    return target


def test_hostile_weight_files_are_one_line_errors(tmp_path, x_of, monkeypatch):
    x = x_of("keras_simple")
    cases = {}
    cases["truncated zip"] = cut(MODELS / "keras_simple.keras", tmp_path, "cut.keras"), "not a valid .keras (zip)"
    cases["truncated npz"] = cut(MODELS / "torch_rnn1.npz", tmp_path, "cut.npz"), "zip"
    np.savez(tmp_path / "objects.npz", weight_ih_l0=np.array([{"a": 1}], dtype=object))
    cases["object array"] = tmp_path / "objects.npz", "Python objects"
    cases["unknown layer"] = MODELS / "keras_dense.keras", "layer 'dense' is a Dense"
    np.savez(
        tmp_path / "shapes.npz", weight_ih_l0=np.zeros((4, 3), np.float32), weight_hh_l0=np.zeros((4, 5), np.float32)
    )
    cases["shapes"] = tmp_path / "shapes.npz", "W_hh has shape (4, 5) but W_ih (4, 3) implies 4 units"
    cases["truncated onnx"] = cut(MODELS / "torch_rnn1.onnx", tmp_path, "cut.onnx"), "not a valid ONNX model"
    cases["truncated safetensors"] = cut(MODELS / "torch_rnn1.safetensors", tmp_path, "cut.safetensors"), "cut short"
    cases["truncated h5"] = cut(MODELS / "keras_simple.weights.h5", tmp_path, "cut.weights.h5"), "HDF5"
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases["empty onnx"] = tmp_path / "empty.onnx", "no RNN node"
    for label, (path, fragment) in cases.items():
        line = one_line(invoke("run", x, "--weights", path))
        assert fragment in line and str(path) in line, (label, line)
    monkeypatch.setattr("rnncli.io.memory_budget", lambda: 1 << 20)
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(16 << 20))
    assert bomb.stat().st_size < 100_000
    assert "zip bomb" in one_line(invoke("run", x, "--weights", bomb))


@pytest.mark.parametrize(
    "module, extra, name",
    [
        ("h5py", "keras", "keras_simple.keras"),
        ("onnx", "onnx", "torch_rnn1.onnx"),
        ("safetensors.numpy", "safetensors", "torch_rnn1.safetensors"),
    ],
)
def test_missing_extras_are_named(monkeypatch, module, extra, name, x_of):
    monkeypatch.setitem(sys.modules, module, None)
    line = one_line(invoke("run", x_of(name.split(".")[0]), "--weights", MODELS / name))
    assert f"pip install 'rnncli[{extra}]'" in line and name in line


# --- rnncli weights inspect -----------------------------------------------------------------------


def test_inspect_shows_the_model_and_its_tensors():
    result = ok("weights", "inspect", MODELS / "keras_stacked.keras")
    assert result.stderr == ""
    # 3·6 + 6·6 (no bias) + 6·4 + 4·4 + 4 = 98
    for fragment in (
        "2 layers × 6,4 units",
        "relu, no bias",
        "tanh, bias",
        "simple_rnn/kernel",
        "(3, 6)",
        "98 parameters",
    ):
        assert fragment in result.stdout, fragment


def test_inspect_json_is_clean_and_counts_right():
    result = ok("weights", "inspect", MODELS / "torch_rnn2bi_nobias.safetensors", "--json")
    facts = json.loads(result.stdout)
    assert facts["format"] == "safetensors" and facts["model"]["units"] == [4, 4]
    assert facts["model"]["parameters"] == sum(np.prod(t["shape"]) for t in facts["tensors"]) == 152
    assert facts["stored"] == {} and "activation" in facts["not_stored"]
    assert {t["name"] for t in facts["tensors"]} >= {"weight_ih_l1", "weight_hh_l0_reverse"}
    onnx = json.loads(ok("weights", "inspect", MODELS / "onnx_rnn_hand.onnx", "--json").stdout)
    assert onnx["model"]["parts"][0]["activation"] == "relu" and onnx["facts"]["input"]["layout"] == "time-major"
    keras = json.loads(
        ok(
            "weights", "inspect", MODELS / "keras_bi_sum.weights.h5", "--json", "--merge", "sum", "--input-size", "3"
        ).stdout
    )
    assert keras["facts"]["layer_order"] == ["bidirectional", "simple_rnn"] and keras["return"] is None


def test_inspect_errors_are_one_line():
    assert "layer 'dense' is a Dense" in one_line(invoke("weights", "inspect", MODELS / "keras_dense.keras"))
    assert "no such weights file" in one_line(invoke("weights", "inspect", MODELS / "missing.npz"))


# --- rnncli info ----------------------------------------------------------------------------------


def test_info_statistics_match_numpy(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(1000, 4)) * [1, 10, 100, 0.1]).astype(np.float32)
    data[5, 2] = np.nan
    data[7, 0] = np.inf
    np.save(tmp_path / "d.npy", data)
    monkeypatch.setattr("rnncli.info.BLOCK_BYTES", 4 * 4 * 37)  # many blocks: the merge must be exact
    facts = json.loads(ok("info", tmp_path / "d.npy", "--json").stdout)
    (array,) = facts["arrays"]
    assert array["shape"] == [1000, 4] and array["dtype"] == "float32" and array["bytes"] == 16000
    assert facts["file_bytes"] == (tmp_path / "d.npy").stat().st_size
    assert array["stats"]["nan"] == 1 and array["stats"]["inf"] == 1
    for i, feature in enumerate(array["stats"]["features"]):
        column = data[:, i].astype(np.float64)
        finite = column[np.isfinite(column)]
        assert feature["min"] == pytest.approx(finite.min()) and feature["max"] == pytest.approx(finite.max())
        assert feature["mean"] == pytest.approx(finite.mean(), rel=1e-9)
        assert feature["std"] == pytest.approx(finite.std(), rel=1e-9)
    fortran = np.asfortranarray(data[:, :2])
    np.save(tmp_path / "f.npy", fortran)
    facts = json.loads(ok("info", tmp_path / "f.npy", "--json").stdout)["arrays"][0]
    assert facts["order"] == "F" and facts["stats"]["features"][1]["mean"] == pytest.approx(
        data[:, 1].astype(float).mean()
    )


def test_info_npz_csv_stdin_and_tables(tmp_path, sample_npy, sample_csv):
    np.savez(tmp_path / "two.npz", a=np.arange(6.0).reshape(3, 2), b=np.ones((2, 3, 4), np.float32))
    facts = json.loads(ok("info", tmp_path / "two.npz", "--json").stdout)
    assert [(a["key"], a["shape"]) for a in facts["arrays"]] == [("a", [3, 2]), ("b", [2, 3, 4])]
    assert facts["arrays"][0]["stats"]["features"][1]["mean"] == 3.0
    only = json.loads(ok("info", tmp_path / "two.npz", "--key", "b", "--json").stdout)
    assert [a["key"] for a in only["arrays"]] == ["b"] and "3 timesteps" in only["arrays"][0]["as_input"]
    from_csv = json.loads(ok("info", sample_csv, "--json").stdout)
    from_npy = json.loads(ok("info", sample_npy, "--json").stdout)
    assert from_csv["arrays"][0]["shape"] == from_npy["arrays"][0]["shape"] == [500, 3]
    piped = json.loads(ok("info", "-", "--json", input=sample_npy.read_bytes()).stdout)
    assert piped["arrays"][0]["stats"]["mean"] == pytest.approx(from_npy["arrays"][0]["stats"]["mean"])
    table = ok("info", sample_npy)
    assert "500 timesteps × 3 features" in table.stdout and "feature" in table.stdout and table.stderr == ""
    assert "no such file" in one_line(invoke("info", tmp_path / "missing.npy"))
    assert "no array 'c'" in one_line(invoke("info", tmp_path / "two.npz", "--key", "c"))


def test_info_reads_npy_in_blocks_not_whole(tmp_path, monkeypatch):
    np.save(tmp_path / "big.npy", np.zeros((2000, 3), np.float32))
    sizes = []
    import rnncli.info

    real = rnncli.info.iter_npy_rows

    def spy(fp, name, shape, dtype, rows):
        for block in real(fp, name, shape, dtype, rows):
            sizes.append(block.nbytes)
            yield block

    monkeypatch.setattr(rnncli.info, "iter_npy_rows", spy)
    monkeypatch.setattr(rnncli.info, "BLOCK_BYTES", 1200)
    ok("info", tmp_path / "big.npy", "--json")
    assert len(sizes) > 10 and max(sizes) <= 1200


# --- start-up stays light -------------------------------------------------------------------------


def test_help_of_the_new_commands_imports_no_numpy_or_extras():
    code = (
        "import sys\nfrom rnncli.cli import main\n"
        "for args in (['weights', '--help'], ['weights', 'inspect', '--help'], ['weights', 'convert', '--help'], "
        "['info', '--help']):\n"
        "    main(args, standalone_mode=False)\n"
        "heavy = [m for m in ('numpy', 'h5py', 'onnx', 'safetensors', 'rich') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout
    assert "Example" in result.stdout


def test_npz_saved_by_old_rnncli_still_loads(tmp_path, sample_npy):
    """Version-1 files (one settings block, no parts) load as before."""
    tensors, _ = read_weights(MODELS / "torch_rnn1.npz")
    meta = json.dumps(
        {
            "format": "rnncli-weights",
            "version": 1,
            "activation": "relu",
            "merge": "concat",
            "reverse": False,
            "clip": None,
            "leak": 1.0,
        }
    )
    buffer = io.BytesIO()
    np.savez(buffer, **tensors, __rnncli__=np.array(meta))
    (tmp_path / "old.npz").write_bytes(buffer.getvalue())
    facts = json.loads(ok("weights", "inspect", tmp_path / "old.npz", "--json").stdout)
    assert facts["stored"]["activation"] == "relu" and facts["model"]["kind"] == "rnn"


@pytest.mark.parametrize("target", ["w.npz", "link.npz", "./w.npz"])
def test_convert_refuses_to_write_over_its_input(tmp_path, monkeypatch, target):
    monkeypatch.chdir(tmp_path)
    saved = CliRunner().invoke(main, ["run", "-", "--units", "3", "-q", "--save-weights", "w.npz"], input="1,2\n")
    assert saved.exit_code == 0, saved.stderr
    os.symlink("w.npz", "link.npz")
    before = (tmp_path / "w.npz").read_bytes()
    result = CliRunner().invoke(main, ["weights", "convert", "w.npz", target, "--to", "safetensors"])
    assert result.exit_code == 2
    assert result.stderr == f"rnncli: error: OUT {target} is also the IN file; write the output to another file\n"
    assert (tmp_path / "w.npz").read_bytes() == before
