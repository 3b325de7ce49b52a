"""Weight formats as a library: every reader against the framework fixtures, every writer by round trip.

The fixtures in tests/fixtures/models were made by the real Keras 3, PyTorch and torch.onnx.export
(tests/fixtures/make_models.py; layouts in tests/conformance/README.md). Exported ONNX models are
run by onnxruntime; exported Keras files are checked against the layout of Keras's own files.
"""

from __future__ import annotations

import io
import json
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from rnncli.errors import MissingExtraError, RnnCliError, WeightsError
from rnncli.initializers import init_model
from rnncli.model import RNN, Stack
from rnncli.weights import (
    METADATA_KEY,
    describe,
    from_state_dict,
    load_weights,
    open_weights,
    read_weights,
    save_weights,
    to_state_dict,
    write_weights,
)

MODELS = Path(__file__).parent / "fixtures" / "models"
TOLERANCE = 1e-5


def expected(stem):
    with np.load(MODELS / f"{stem}.expected.npz", allow_pickle=False) as data:
        case = {key: data[key] for key in data.files}
    case["config"] = json.loads(str(case["config"]))
    return case


def saved(model, fmt="npz", **kwargs):
    buffer = io.BytesIO()
    notes = write_weights(model, buffer, fmt, **kwargs)
    buffer.seek(0)
    buffer.name = f"model.{fmt}"
    return buffer, notes


# --- readers against the frameworks ---------------------------------------------------------------

# model file -> (expected stem, settings the file does not record)
READABLE = {
    "keras_simple.keras": ("keras_simple", {}),
    "keras_simple.weights.h5": ("keras_simple", {}),
    "keras_stacked.keras": ("keras_stacked", {}),
    "keras_bi_sum.keras": ("keras_bi_sum", {}),
    "keras_bi_sum.weights.h5": ("keras_bi_sum", {"merge": "sum"}),
    "keras_go_backwards.keras": ("keras_go_backwards", {}),
    "keras_mixed.keras": ("keras_mixed", {}),
    "torch_rnn1.npz": ("torch_rnn1", {}),
    "torch_rnn1.safetensors": ("torch_rnn1", {}),
    "torch_rnn1.onnx": ("torch_rnn1", {}),
    "torch_rnn2bi_nobias.npz": ("torch_rnn2bi_nobias", {}),
    "torch_rnn2bi_nobias.safetensors": ("torch_rnn2bi_nobias", {}),
    "torch_rnn2bi_nobias.onnx": ("torch_rnn2bi_nobias", {}),
    "onnx_rnn_hand.onnx": ("onnx_rnn_hand", {}),
    "torch_rnn3_time_major.onnx": ("torch_rnn3_time_major", {}),
    "torch_rnn2_h0_input.onnx": ("torch_rnn2_h0_input", {}),
    "torch_rnn2_h0_constant.onnx": ("torch_rnn2_h0_constant", {}),
}


def loaded_fixture(name):
    stem, settings = READABLE[name]
    case = expected(stem)
    return open_weights(MODELS / name, settings=settings, input_size=case["x"].shape[-1]), case


@pytest.mark.parametrize("name", sorted(READABLE))
def test_reader_matches_the_framework(name):
    loaded, case = loaded_fixture(name)
    # the state the graph holds, else the one the framework was given (a graph input)
    state = loaded.initial_state if loaded.initial_state is not None else case.get("initial_state")
    out = loaded.model.forward(case["x"], initial_state=state, time_major=case["config"]["time_major"])
    if "keras_output" in case:  # Keras's own model(x)
        keras_returned = case["config"]["keras_output"].split("_")[0]  # "final" or "sequence"
        # a .keras model's own return_sequences decides; a .weights.h5 does not record it
        assert loaded.return_mode == (keras_returned if name.endswith(".keras") else None)
        produced = out.final if keras_returned == "final" else out.sequence
        np.testing.assert_allclose(produced, case["keras_output"], rtol=0, atol=TOLERANCE)
    else:
        np.testing.assert_allclose(out.sequence, case["sequence"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(out.final, case["final"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(np.stack(out.state), case["state"], rtol=0, atol=TOLERANCE)


def test_every_fixture_model_is_read_by_a_test():
    models = {p.name for p in MODELS.iterdir() if not p.name.endswith(".expected.npz") and p.suffix != ".py"}
    special = {"torch_rnn1.pt", "torch_rnn2bi_nobias.pt", "keras_dense.keras"}  # fake torch; unknown-layer error
    assert models == set(READABLE) | special


def test_keras_models_keep_their_structure():
    stacked = load_weights(MODELS / "keras_stacked.keras")
    assert isinstance(stacked, Stack) and [p.activation for p in stacked.parts] == ["relu", "tanh"]
    assert [p.has_bias for p in stacked.parts] == [False, True]
    backwards = open_weights(MODELS / "keras_go_backwards.keras")
    assert backwards.model.keras_order == (True,) and backwards.return_mode == "sequence"
    case = expected("keras_go_backwards")
    out = backwards.model.forward(case["x"])
    np.testing.assert_allclose(out.sequence[:, ::-1], case["sequence"], atol=TOLERANCE)  # processing order
    simple = open_weights(MODELS / "keras_simple.keras")
    assert isinstance(simple.model, RNN) and simple.return_mode == "final"
    assert simple.stored["activation"] == "tanh" and simple.facts["keras_version"] == "3.15.1"


def test_weights_h5_takes_settings_from_options_and_orders_layers_by_shape():
    case = expected("keras_bi_sum")
    loaded = open_weights(MODELS / "keras_bi_sum.weights.h5", settings={"merge": "sum"}, input_size=3)
    assert loaded.stored == {} and loaded.facts["layer_order"] == ["bidirectional", "simple_rnn"]
    assert loaded.facts["layer_names"] == ["bidirectional", "simple_rnn_1"]  # Keras's real names, keys by class
    np.testing.assert_allclose(loaded.model.forward(case["x"]).final, case["keras_output"], atol=TOLERANCE)
    with pytest.raises(WeightsError, match=r"more than one order.*--input-size"):
        open_weights(MODELS / "keras_bi_sum.weights.h5", settings={"merge": "sum"})  # 3→5→3 or 5→3→5
    with pytest.raises(WeightsError, match=r"no order of the layers chains their shapes.*--merge"):
        open_weights(MODELS / "keras_bi_sum.weights.h5", input_size=3)  # concat would give 10 features
    relu = open_weights(MODELS / "keras_simple.weights.h5", settings={"activation": "relu"}).model
    assert relu.activation == "relu"


def test_onnx_reader_follows_the_graph():
    loaded = open_weights(MODELS / "torch_rnn2bi_nobias.onnx")
    assert loaded.model.units == (4, 4) and loaded.model.directions == 2 and not loaded.model.has_bias
    assert loaded.facts["input"] == {"name": "x", "layout": "batch-first"}
    assert [n["merge"] for n in loaded.facts["rnn_nodes"]] == ["concat", "concat"]
    hand = open_weights(MODELS / "onnx_rnn_hand.onnx")
    assert hand.facts["input"]["layout"] == "time-major"
    assert hand.model.activation == "relu" and hand.model.clip == pytest.approx(0.8)
    assert hand.stored["clip"] == pytest.approx(0.8)


def test_a_graph_decides_its_input_layout_and_metadata_keeps_it():
    assert open_weights(MODELS / "torch_rnn3_time_major.onnx").layout == "time-major"  # batch_first=False
    assert open_weights(MODELS / "torch_rnn1.onnx").layout == "batch-first"  # Transpose nodes around the RNN
    assert open_weights(MODELS / "torch_rnn1.npz").layout is None  # a state_dict does not say
    loaded = open_weights(MODELS / "torch_rnn3_time_major.onnx")
    for fmt in ("npz", "safetensors"):
        buffer, notes = saved(loaded.model, fmt, layout=loaded.layout)
        again = open_weights(buffer)
        assert notes == [] and again.layout == "time-major" and again.facts["metadata"]
    _, metadata = read_weights(saved(loaded.model, "npz", layout=loaded.layout)[0])
    assert metadata["layout"] == "time-major"
    for fmt in ("keras", "weights.h5"):  # Keras models are batch-first
        _, notes = saved(loaded.model, fmt, layout=loaded.layout)
        assert any("time-major" in note and "--time-major" in note for note in notes)


def test_an_onnx_graph_written_time_major_runs_so_in_onnxruntime():
    import onnxruntime as ort

    loaded = open_weights(MODELS / "torch_rnn3_time_major.onnx")
    case = expected("torch_rnn3_time_major")
    buffer, notes = saved(loaded.model, "onnx", layout=loaded.layout)
    assert notes == [] and open_weights(buffer).layout == "time-major"
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    y, final = session.run(["y", "final"], {"x": case["x"]})  # (T, B, F) in, (T, B, H) out
    np.testing.assert_allclose(y, case["sequence"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(final, case["final"], rtol=0, atol=TOLERANCE)


def test_an_initial_state_the_graph_takes_as_input_is_a_warning():
    loaded = open_weights(MODELS / "torch_rnn2_h0_input.onnx")
    case = expected("torch_rnn2_h0_input")
    (warning,) = loaded.warnings
    assert "torch_rnn2_h0_input.onnx" in warning and "input 'h0'" in warning and "--initial-state FILE" in warning
    assert loaded.initial_state is None
    assert [node["initial_h"] for node in loaded.facts["rnn_nodes"]] == ["graph input 'h0'"] * 2
    out = loaded.model.forward(case["x"])  # no state given: zeros
    np.testing.assert_allclose(out.sequence, case["sequence_from_zeros"], rtol=0, atol=TOLERANCE)


def test_an_initial_state_the_graph_holds_is_kept():
    loaded = open_weights(MODELS / "torch_rnn2_h0_constant.onnx")
    case = expected("torch_rnn2_h0_constant")
    assert loaded.warnings == [] and [node["initial_h"] for node in loaded.facts["rnn_nodes"]] == ["constant"] * 2
    np.testing.assert_array_equal(np.stack(loaded.initial_state), case["initial_state"])  # (L*D, B, H)
    assert describe(loaded)["initial_state"] == [[2, 4], [2, 4]]
    _, notes = saved(loaded.model, "npz", initial_state=loaded.initial_state)
    assert any("initial state" in note and "--initial-state" in note for note in notes)


def test_parameters_are_counted_as_the_framework_counts_them():
    mixed = open_weights(MODELS / "keras_mixed.keras")
    assert mixed.parameters == 760  # Keras's count_params(): one bias per cell
    assert mixed.model.parameter_count == 792  # rnncli's cells hold Keras's bias and a zero second one
    assert open_weights(MODELS / "torch_rnn1.onnx").parameters == 5 * 3 + 5 * 5 + 2 * 5  # B holds b_ih and b_hh
    parts = describe(mixed)["model"]["parts"]
    assert [(p["activation"], p["directions"], p["merge"], p["reverse"], p["bias"]) for p in parts] == [
        ("relu", 1, None, False, True),
        ("sigmoid", 1, None, True, True),
        ("softsign", 2, "ave", False, True),
        ("elu", 2, "concat", False, False),
    ]


def test_onnx_matches_the_same_weights_saved_by_torch():
    npz = to_state_dict(load_weights(MODELS / "torch_rnn2bi_nobias.npz"))
    onnx = to_state_dict(load_weights(MODELS / "torch_rnn2bi_nobias.onnx"))
    assert npz.keys() == onnx.keys()
    for key in npz:
        np.testing.assert_array_equal(npz[key], onnx[key])


def test_state_dicts_under_a_module_prefix_and_keras_names():
    tensors, _ = read_weights(MODELS / "torch_rnn1.npz")
    plain = from_state_dict(tensors)
    prefixed = from_state_dict({f"encoder.rnn.{k}": v for k, v in tensors.items()})
    assert to_state_dict(prefixed).keys() == to_state_dict(plain).keys()
    with pytest.raises(WeightsError, match=r"fc.weight.*save that module's state_dict"):
        from_state_dict({**{f"rnn.{k}": v for k, v in tensors.items()}, "fc.weight": np.zeros((2, 5), np.float32)})
    kernel = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    keras = from_state_dict({"kernel": kernel, "recurrent_kernel": np.eye(4, dtype=np.float32), "bias": np.ones(4)})
    np.testing.assert_array_equal(keras.layers[0][0].w_ih, kernel.T)


# --- .pt only through torch.load(weights_only=True) -----------------------------------------------


class FakeTensor:
    """What the .pt reader touches of a torch.Tensor."""

    def __init__(self, array, dtype="torch.float32"):
        self.array, self.dtype = np.asarray(array), dtype

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return FakeTensor(self.array.astype(np.float32))

    def numpy(self):
        return self.array


def fake_torch(monkeypatch, content, version="2.13.0"):
    """A `torch` module whose load insists on weights_only=True and returns `content`."""
    calls = []

    def load(fp, map_location=None, weights_only=False):
        assert weights_only is True, "rnncli must never unpickle: torch.load needs weights_only=True"
        calls.append({"bytes": fp.read(), "map_location": map_location})
        if isinstance(content, Exception):
            raise content
        return content

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load, __version__=version))
    return calls


def torch_tensors(stem):
    tensors, _ = read_weights(MODELS / f"{stem}.npz")
    return OrderedDict((k, FakeTensor(v)) for k, v in tensors.items())


@pytest.mark.parametrize("stem", ["torch_rnn1", "torch_rnn2bi_nobias"])
def test_pt_goes_through_torch_load_weights_only(monkeypatch, stem):
    calls = fake_torch(monkeypatch, torch_tensors(stem))
    model = load_weights(MODELS / f"{stem}.pt")
    assert calls[0]["bytes"] == (MODELS / f"{stem}.pt").read_bytes() and calls[0]["map_location"] == "cpu"
    case = expected(stem)
    np.testing.assert_allclose(model.forward(case["x"]).sequence, case["sequence"], atol=TOLERANCE)


def test_pt_checkpoints_half_precision_and_refusals(monkeypatch):
    tensors = torch_tensors("torch_rnn1")
    half = {k: FakeTensor(v.array.astype(np.float16), "torch.float16") for k, v in tensors.items()}
    fake_torch(monkeypatch, {"epoch": 3, "model": {f"rnn.{k}": v for k, v in half.items()}})
    model = load_weights(MODELS / "torch_rnn1.pt")
    assert model.dtype == np.float32 and model.units == (5,)
    fake_torch(monkeypatch, RuntimeError("Weights only load failed: GLOBAL os.system was not an allowed global"))
    with pytest.raises(WeightsError, match=r"weights_only=True\) could not read it \(Weights only load failed"):
        load_weights(MODELS / "torch_rnn1.pt")
    fake_torch(monkeypatch, [1, 2])
    with pytest.raises(WeightsError, match=r"holds a list, not a state_dict"):
        load_weights(MODELS / "torch_rnn1.pt")


def test_pt_refused_with_a_torch_whose_weights_only_can_be_bypassed(monkeypatch):
    calls = fake_torch(monkeypatch, torch_tensors("torch_rnn1"), version="2.5.1+cpu")
    with pytest.raises(WeightsError, match=r"PyTorch 2\.5\.1\+cpu has a known bypass.*CVE-2025-32434"):
        load_weights(MODELS / "torch_rnn1.pt")
    assert calls == []


def test_pt_without_torch_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(WeightsError, match=r"PyTorch is not installed.*safetensors") as caught:
        load_weights(MODELS / "torch_rnn1.pt")
    assert "torch_rnn1.pt" in str(caught.value)


# --- optional dependencies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, extra, name",
    [
        ("h5py", "keras", "keras_simple.keras"),
        ("h5py", "keras", "keras_simple.weights.h5"),
        ("safetensors.numpy", "safetensors", "torch_rnn1.safetensors"),
        ("onnx", "onnx", "torch_rnn1.onnx"),
    ],
)
def test_a_missing_extra_names_itself(monkeypatch, module, extra, name):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'rnncli\[{extra}\]'") as caught:
        load_weights(MODELS / name)
    assert name in str(caught.value)


def test_optional_packages_are_not_imported_by_the_core(monkeypatch):
    for module in ("h5py", "onnx", "safetensors", "safetensors.numpy"):
        monkeypatch.setitem(sys.modules, module, None)
    model = load_weights(MODELS / "torch_rnn1.npz")  # .npz needs none of them
    buffer, _ = saved(model, "npz")
    assert to_state_dict(load_weights(buffer)).keys() == to_state_dict(model).keys()


# --- writers: round trips -------------------------------------------------------------------------


def models_to_write():
    """Fixture models plus rnncli's own variety: merges, reverse, clip, leak, float64, mixed stacks."""
    models = {name: loaded_fixture(name)[0] for name in sorted(READABLE)}
    for merge in ("concat", "sum", "mul", "ave"):
        models[f"bi_{merge}"] = types.SimpleNamespace(
            model=init_model(3, (5, 4), bidirectional=True, merge=merge, seed=1), return_mode=None
        )
    for activation in ("relu", "sigmoid", "hard_sigmoid", "linear", "softsign", "softplus", "elu"):
        models[activation] = types.SimpleNamespace(
            model=init_model(3, 4, activation=activation, seed=2), return_mode=None
        )
    models["reverse_2layer"] = types.SimpleNamespace(
        model=init_model(3, (4, 4), reverse=True, seed=3), return_mode=None
    )
    models["clip_nobias"] = types.SimpleNamespace(
        model=init_model(3, 4, clip=0.5, bias=False, seed=4), return_mode=None
    )
    models["leaky"] = types.SimpleNamespace(model=init_model(3, 6, leak=0.3, init="esn", seed=5), return_mode=None)
    models["float64"] = types.SimpleNamespace(model=init_model(3, 4, dtype="float64", seed=6), return_mode=None)
    return models


MODELS_TO_WRITE = models_to_write()
INPUT = np.random.default_rng(7).uniform(-2, 2, (3, 9, 3)).astype(np.float32)


def outputs(model, x=INPUT):
    out = model.forward(x.astype(model.dtype))
    return out.sequence, out.final


def expressible(name, fmt):
    model = MODELS_TO_WRITE[name].model
    parts = model.parts if isinstance(model, Stack) else (model,)
    if fmt in ("keras", "weights.h5") and any(p.clip is not None or p.leak != 1 for p in parts):
        return False
    if fmt == "onnx" and any(p.leak != 1 for p in parts):
        return False
    if fmt == "keras" and any(p.reverse for p in parts) and not isinstance(model, Stack):
        return False
    if fmt == "weights.h5":
        if isinstance(model, Stack) and (any(model.keras_order) or len({p.activation for p in parts}) > 1):
            return False
    return True


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@pytest.mark.parametrize("name", sorted(MODELS_TO_WRITE))
def test_save_and_load_give_identical_arrays(name, fmt):
    source = MODELS_TO_WRITE[name]
    buffer, notes = saved(source.model, fmt, return_mode=source.return_mode)
    again = open_weights(buffer)
    assert notes == [] and again.return_mode == source.return_mode and type(again.model) is type(source.model)
    before, after = to_state_dict(source.model), to_state_dict(again.model)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
        assert before[key].dtype == after[key].dtype
    for a, b in zip(outputs(source.model), outputs(again.model)):
        np.testing.assert_array_equal(a, b)  # bit for bit


@pytest.mark.parametrize("fmt", ["keras", "weights.h5", "onnx"])
@pytest.mark.parametrize("name", sorted(MODELS_TO_WRITE))
def test_every_target_that_can_express_the_model_gives_it_back(name, fmt):
    source = MODELS_TO_WRITE[name]
    if not expressible(name, fmt):
        with pytest.raises(WeightsError, match=r"cannot hold this model"):
            saved(source.model, fmt, return_mode=source.return_mode)
        return
    if fmt == "onnx" and source.model.dtype == np.float64:
        _, notes = saved(source.model, fmt)
        assert any("float64" in note for note in notes)
    buffer, notes = saved(source.model, fmt, return_mode=source.return_mode)
    settings = {}
    if fmt == "weights.h5":  # no settings inside: the notes say which options bring them back
        parts = source.model.parts if isinstance(source.model, Stack) else (source.model,)
        settings = {"activation": parts[0].activation, "reverse": parts[0].reverse}
        merges = {p.merge for p in parts if p.directions == 2}
        if merges:
            settings["merge"] = merges.pop()
        wanted = [f"--activation {settings['activation']}"] if settings["activation"] != "tanh" else []
        if settings.get("merge", "concat") != "concat":
            wanted.append(f"--merge {settings['merge']}")
        if settings["reverse"]:
            wanted.append("--reverse")
        assert (" ".join(wanted) in notes[0]) if wanted else not [n for n in notes if "stores no settings" in n]
    again = open_weights(buffer, settings=settings, input_size=source.model.input_size)
    for a, b in zip(outputs(source.model), outputs(again.model)):
        np.testing.assert_array_equal(a, b)  # the same numbers in the same order: bit for bit
    if fmt == "keras":
        assert again.return_mode == (source.return_mode or "sequence")


@pytest.mark.parametrize("name", sorted(MODELS_TO_WRITE))
def test_exported_onnx_runs_in_onnxruntime_with_rnncli_outputs(name):
    import onnx
    import onnxruntime as ort  # the test extra has it

    model = MODELS_TO_WRITE[name].model
    if not expressible(name, "onnx"):
        return
    if model.dtype == np.float64:
        model = model.astype("float32")  # onnxruntime has no float64 RNN kernel
    buffer, _ = saved(model, "onnx")
    proto = onnx.load_model_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    y, final = session.run(["y", "final"], {"x": INPUT})
    sequence, last = outputs(model)
    scale = max(1.0, float(np.abs(sequence).max()))  # linear activations grow: compare relative to size
    np.testing.assert_allclose(y, sequence, rtol=0, atol=TOLERANCE * scale)
    np.testing.assert_allclose(final, last, rtol=0, atol=TOLERANCE * scale)
    y1, _ = session.run(["y", "final"], {"x": INPUT[:1, :4]})  # dynamic batch and time axes
    np.testing.assert_allclose(y1, outputs(model, INPUT[:1, :4])[0], rtol=0, atol=TOLERANCE * scale)


def h5_layout(data):
    import h5py

    found = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(lambda path, item: found.__setitem__(path, getattr(item, "shape", "group")))
        names = {path: h5[path].attrs.get("name") for path in found if path.endswith("vars")}
    return found, names


@pytest.mark.parametrize("stem", ["keras_simple", "keras_stacked", "keras_bi_sum", "keras_go_backwards"])
def test_exported_keras_has_keras_own_layout(stem):
    """Without Keras installed: the .keras rnncli writes has the members, config and HDF5 layout Keras writes."""
    ours_buffer, _ = saved(
        load_weights(MODELS / f"{stem}.keras"),
        "keras",
        return_mode=expected(stem)["config"]["keras_output"].split("_")[0],
    )
    ours, theirs = zipfile.ZipFile(ours_buffer), zipfile.ZipFile(MODELS / f"{stem}.keras")
    assert sorted(ours.namelist()) == sorted(theirs.namelist())
    our_layout, our_names = h5_layout(ours.read("model.weights.h5"))
    their_layout, their_names = h5_layout(theirs.read("model.weights.h5"))
    assert our_layout == their_layout
    assert {k: v for k, v in our_names.items() if "cell" in k} == {k: v for k, v in their_names.items() if "cell" in k}

    def skeleton(config):
        layers = config["config"]["layers"]
        keep = ("units", "activation", "use_bias", "return_sequences", "go_backwards", "merge_mode", "batch_shape")
        return [(layer["class_name"], {k: v for k, v in layer["config"].items() if k in keep}) for layer in layers]

    our_config, their_config = json.loads(ours.read("config.json")), json.loads(theirs.read("config.json"))
    assert our_config["class_name"] == their_config["class_name"] == "Sequential"
    assert skeleton(our_config) == skeleton(their_config)
    for ours_layer, theirs_layer in zip(our_config["config"]["layers"], their_config["config"]["layers"]):
        assert set(ours_layer["config"]) <= set(theirs_layer["config"]) | {"zero_output_for_mask"}


# --- hostile files --------------------------------------------------------------------------------


def keras_with(config_edit=None, weights=None, source="keras_simple.keras"):
    with zipfile.ZipFile(MODELS / source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    if config_edit:
        config = json.loads(files["config.json"])
        config_edit(config)
        files["config.json"] = json.dumps(config).encode()
    if weights is not None:
        files["model.weights.h5"] = weights
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    buffer.name = "edited.keras"
    return buffer


def rnn_layer(config):
    return config["config"]["layers"][1]["config"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: rnn_layer(c).update(units=5),
            r"cell/vars/0 \(kernel\) has shape \(3, 4\), but layer 'simple_rnn' has 5",
        ),
        (lambda c: rnn_layer(c).update(use_bias=False), "use_bias=False but its weights hold"),
        (lambda c: rnn_layer(c).update(activation="gelu"), "uses activation 'gelu'"),
        (lambda c: c["config"]["layers"][1].update(class_name="LSTM"), "layer 'simple_rnn' is a LSTM"),
        (lambda c: c.update(class_name="Functional"), "the model is a Functional"),
        (lambda c: c["config"]["layers"][0]["config"].update(batch_shape=[None, None, 7]), "gives 7"),
        (lambda c: rnn_layer(c).update(return_state=True), "return_state=True"),
    ],
)
def test_keras_configs_that_disagree_with_their_weights(edit, message):
    with pytest.raises(WeightsError, match=message) as caught:
        load_weights(keras_with(edit))
    assert str(caught.value).startswith("edited.keras") and "\n" not in str(caught.value)


def test_keras_archive_damage():
    data = (MODELS / "keras_simple.keras").read_bytes()
    with pytest.raises(WeightsError, match=r"not a valid .keras"):
        load_weights(io.BytesIO(data[: len(data) // 2]), name="cut.keras")
    with pytest.raises(WeightsError, match=r"not a readable HDF5 file"):
        load_weights(keras_with(weights=b"\x89HDF\r\n\x1a\n" + b"\0" * 200))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(WeightsError, match=r"no model.weights.h5"):
        load_weights(io.BytesIO(buffer.getvalue()), name="empty.keras")


def test_keras_zip_bomb_is_refused_before_inflating(monkeypatch):
    monkeypatch.setattr("rnncli.io.memory_budget", lambda: 1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", (MODELS / "keras_simple.keras").open("rb").read()[:0] + b"{}")
        with archive.open("model.weights.h5", "w") as member:
            for _ in range(8):
                member.write(bytes(1 << 20))
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(WeightsError, match=r"zip bomb"):
        load_weights(io.BytesIO(buffer.getvalue()), name="bomb.keras")


def test_hostile_state_dict_files(tmp_path):
    np.savez(tmp_path / "objects.npz", weight_ih_l0=np.array([object()], dtype=object))
    with pytest.raises(RnnCliError, match=r"Python objects"):
        load_weights(tmp_path / "objects.npz")
    good, _ = read_weights(MODELS / "torch_rnn1.npz")
    np.savez(tmp_path / "meta.npz", **good, **{METADATA_KEY: np.array('{"activation": 3}')})
    with pytest.raises(WeightsError, match=r"activation=3, not a valid value"):
        load_weights(tmp_path / "meta.npz")
    np.savez(tmp_path / "future.npz", **good, **{METADATA_KEY: np.array('{"version": 9}')})
    with pytest.raises(WeightsError, match=r"newer than this rnncli reads"):
        load_weights(tmp_path / "future.npz")
    np.savez(tmp_path / "newline.npz", **{"weight_ih_l0\nx": good["weight_ih_l0"]})
    with pytest.raises(WeightsError) as caught:
        load_weights(tmp_path / "newline.npz")
    assert "\n" not in str(caught.value) and "weight_ih_l0\\nx" in str(caught.value)
    data = (MODELS / "torch_rnn1.safetensors").read_bytes()
    with pytest.raises(WeightsError, match=r"cut short"):
        load_weights(io.BytesIO(data[:100]), name="cut.safetensors")
    with pytest.raises(WeightsError, match=r"not a valid .safetensors"):
        load_weights(io.BytesIO(data[:-8]), name="short.safetensors")


def onnx_graph(extra_nodes=(), initial_h=None, op="RNN", reshaped=False):
    """X (T, B, 3) into one node: W, R and `initial_h` stored (`reshaped`: stored flat, then reshaped)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 4, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 4 * (4 if op == "LSTM" else 1), 4)).astype(np.float32), "R"),
    ]
    inputs = ["X", "W", "R"]
    nodes = []
    if initial_h is not None:
        inits.append(numpy_helper.from_array(initial_h.reshape(-1) if reshaped else initial_h, "h0"))
        inputs += ["", "", "h0_shaped" if reshaped else "h0"]
    if reshaped:
        inits.append(numpy_helper.from_array(np.array(initial_h.shape, np.int64), "h0_shape"))
        nodes.append(helper.make_node("Reshape", ["h0", "h0_shape"], ["h0_shaped"]))
    nodes += [helper.make_node(op, inputs, ["Y", "Y_h"], hidden_size=4, name="rnn"), *extra_nodes]
    outputs = [extra_nodes[-1].output[0] if extra_nodes else "Y"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    buffer = io.BytesIO(model.SerializeToString())
    buffer.name = "graph.onnx"
    return buffer


def test_onnx_graphs_rnncli_cannot_run_are_refused_by_name():
    from onnx import helper

    head = [helper.make_node("MatMul", ["Y", "Y"], ["Z"], name="head")]
    with pytest.raises(WeightsError, match=r"node 'head' \(MatMul\).*cannot run this model"):
        load_weights(onnx_graph(head))
    with pytest.raises(WeightsError, match=r"\(LSTM\) \(rnncli runs simple RNN nodes"):
        load_weights(onnx_graph(op="LSTM"))
    assert open_weights(onnx_graph(initial_h=np.zeros((1, 1, 4), np.float32))).initial_state is None
    assert open_weights(onnx_graph(initial_h=np.zeros((1, 1, 4), np.float32), reshaped=True)).initial_state is None
    (kept,) = open_weights(onnx_graph(initial_h=np.ones((1, 1, 4), np.float32))).initial_state
    np.testing.assert_array_equal(kept, np.ones((1, 4)))
    with pytest.raises(WeightsError, match=r"initial_h has shape \(1, 1, 5\), not \(directions=1, batch, hidden=4\)"):
        load_weights(onnx_graph(initial_h=np.ones((1, 1, 5), np.float32)))
    with pytest.raises(WeightsError, match=r"initial_h is neither zeros, a stored .* tensor nor a graph input"):
        load_weights(onnx_graph(initial_h=np.ones((1, 1, 4), np.float32), reshaped=True))
    data = (MODELS / "torch_rnn1.onnx").read_bytes()
    with pytest.raises(WeightsError, match=r"not a valid ONNX model"):
        load_weights(io.BytesIO(data[: len(data) // 2]), name="cut.onnx")


def test_weights_h5_with_an_lstm_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "lstm.weights.h5", "w") as h5:
        cell = h5.create_group("layers/simple_rnn/cell/vars")
        cell["0"], cell["1"], cell["2"] = np.zeros((3, 16)), np.zeros((4, 16)), np.zeros(16)
    with pytest.raises(WeightsError, match=r"recurrent kernel\) has shape \(4, 16\), not \(H, H\)"):
        load_weights(tmp_path / "lstm.weights.h5")
    with h5py.File(tmp_path / "dense.weights.h5", "w") as h5:
        h5.create_group("layers/dense/vars")["0"] = np.zeros((3, 2))
    with pytest.raises(WeightsError, match=r"layers/dense is not a SimpleRNN or Bidirectional layer"):
        load_weights(tmp_path / "dense.weights.h5")


def test_save_weights_refuses_other_formats():
    with pytest.raises(WeightsError, match=r".npz or .safetensors"):
        save_weights(load_weights(MODELS / "torch_rnn1.npz"), io.BytesIO(), "onnx")
    with pytest.raises(WeightsError, match=r"does not write .pt"):
        write_weights(load_weights(MODELS / "torch_rnn1.npz"), io.BytesIO(), "pt")
