#!/usr/bin/env python3
"""Generate the golden conformance cases in tests/conformance/golden/*.npz.

Every case is produced by a real framework (PyTorch, Keras 3, onnxruntime),
converted to rnncli's conventions (PyTorch nn.RNN state_dict names/layouts),
then re-checked by the tiny pure-numpy reference loop in this
file (``reference()``), to 1e-5.  See tests/conformance/README.md for the
schema.

How to run (outside the repo's own environment; none of these frameworks is a
dependency of rnncli)::

    python3 -m venv /work/venv-golden
    /work/venv-golden/bin/pip install torch==2.13.0      # CPU wheel
    /work/venv-golden/bin/pip install keras onnx onnxruntime safetensors h5py numpy
    KERAS_BACKEND=torch /work/venv-golden/bin/python tests/conformance/generate_golden.py

Versions used for the committed files:
    torch 2.13.0+cpu, keras 3.15.1 (backend torch), onnx 1.23.2,
    onnxruntime 1.32.0, numpy 2.4.6, Python 3.11.7.

Deterministic: every case has its own fixed seed (crc32 of the case name),
and the .npz files are written with a fixed zip timestamp, so re-running with
the same versions reproduces the files byte for byte.

Options: ``--check-only`` re-runs only the numpy self-check over the existing
golden files (needs numpy alone).
"""
# ruff: noqa: N803, N806  (math-style names: W, R, B, H, T, F, Y_h)
from __future__ import annotations

import io
import json
import os
import sys
import zipfile
import zlib
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
ATOL = 1e-5


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def savez_deterministic(path, **arrays):
    """Same file format as np.savez (uncompressed zip of .npy), fixed timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in arrays:
            arr = np.asanyarray(arrays[key])
            assert arr.dtype != object, key
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def make_config(source, version, *, units, bidirectional=False, merge="concat",
                reverse=False, activation="tanh", bias=True, clip=None,
                time_major=False, description="", **extra):
    cfg = {
        "source": source,
        "version": version,
        "layers": len(units),
        "units": [int(u) for u in units],
        "bidirectional": bool(bidirectional),
        "merge": merge,
        "reverse": bool(reverse),
        "activation": activation,
        "bias": bool(bias),
        "clip": None if clip is None else float(clip),
        "time_major": bool(time_major),
        "description": description,
    }
    cfg.update(extra)
    return cfg


def write_case(name, cfg, x, weights, sequence, final, state=None,
               initial_state=None, lengths=None, outdir=GOLDEN, extra=None):
    arrays = {"config": np.array(json.dumps(cfg, sort_keys=True)),
              "x": np.asarray(x, np.float32)}
    for k in sorted(weights):
        arrays[k] = np.ascontiguousarray(np.asarray(weights[k], np.float32))
    if initial_state is not None:
        arrays["initial_state"] = np.asarray(initial_state, np.float32)
    if lengths is not None:
        arrays["lengths"] = np.asarray(lengths, np.int64)
    arrays["sequence"] = np.asarray(sequence, np.float32)
    arrays["final"] = np.asarray(final, np.float32)
    if state is not None:
        arrays["state"] = np.asarray(state, np.float32)
    for k, v in (extra or {}).items():
        arrays[k] = v
    outdir.mkdir(parents=True, exist_ok=True)
    savez_deterministic(outdir / f"{name}.npz", **arrays)
    return outdir / f"{name}.npz"


# --------------------------------------------------------------------------
# pure-numpy reference (self-check)
# --------------------------------------------------------------------------

def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "sigmoid": _sigmoid,
    # Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6 = clip(x/6 + 1/2, 0, 1)
    "hard_sigmoid": lambda a: np.clip(a / 6.0 + 0.5, 0.0, 1.0),
    "linear": lambda a: a,
    "softsign": lambda a: a / (1.0 + np.abs(a)),
    "softplus": lambda a: np.logaddexp(0.0, a),
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))),
}


def _merge(parts, mode):
    if len(parts) == 1:
        return parts[0]
    a, b = parts
    if mode == "concat":
        return np.concatenate([a, b], axis=-1)
    if mode == "sum":
        return a + b
    if mode == "mul":
        return a * b
    if mode == "ave":
        return (a + b) / 2.0
    raise ValueError(mode)


def reference(cfg, arrs):
    """Recompute (sequence, final, state) from cfg + stored weights, float64."""
    x = np.asarray(arrs["x"], np.float64)
    single = x.ndim == 2
    if single:
        x = x[None]
    elif cfg["time_major"]:
        x = x.transpose(1, 0, 2)
    B, T, _ = x.shape
    lengths = np.asarray(arrs["lengths"]) if "lengths" in arrs else np.full(B, T)
    D = 2 if cfg["bidirectional"] else 1
    h0 = arrs.get("initial_state")
    if h0 is not None:
        h0 = np.asarray(h0, np.float64)
        if single:
            h0 = h0[:, None, :]
    act = ACTIVATIONS[cfg["activation"]]
    clip = cfg["clip"]
    inp = x
    finals_all = []
    fin = None
    for k in range(cfg["layers"]):
        H = cfg["units"][k]
        ys, fs = [], []
        for d in range(D):
            sfx = "_reverse" if d == 1 else ""
            wih = np.asarray(arrs[f"weight_ih_l{k}{sfx}"], np.float64)
            whh = np.asarray(arrs[f"weight_hh_l{k}{sfx}"], np.float64)
            assert wih.shape == (H, inp.shape[-1]), (wih.shape, H, inp.shape)
            assert whh.shape == (H, H)
            if cfg["bias"]:
                bias = (np.asarray(arrs[f"bias_ih_l{k}{sfx}"], np.float64)
                        + np.asarray(arrs[f"bias_hh_l{k}{sfx}"], np.float64))
            else:
                assert f"bias_ih_l{k}{sfx}" not in arrs
                bias = np.zeros(H)
            backward = d == 1 or cfg["reverse"]
            y = np.zeros((B, T, H))
            f = np.zeros((B, H))
            for b in range(B):
                h = h0[k * D + d, b] if h0 is not None else np.zeros(H)
                n = int(lengths[b])
                steps = range(n - 1, -1, -1) if backward else range(n)
                for t in steps:
                    a = wih @ inp[b, t] + whh @ h + bias
                    if clip is not None:
                        a = np.clip(a, -clip, clip)
                    h = act(a)
                    y[b, t] = h
                f[b] = h
            ys.append(y)
            fs.append(f)
        inp = _merge(ys, cfg["merge"])
        fin = _merge(fs, cfg["merge"])
        finals_all.extend(fs)
    sequence, final = inp, fin
    state = None
    if len(set(cfg["units"])) == 1:
        state = np.stack(finals_all)
    if single:
        sequence, final = sequence[0], final[0]
        state = None if state is None else state[:, 0]
    elif cfg["time_major"]:
        sequence = sequence.transpose(1, 0, 2)
    return sequence, final, state


def check_file(path, atol=ATOL):
    """Return list of problems ('' list = ok)."""
    problems = []
    with np.load(path, allow_pickle=False) as z:
        arrs = {k: z[k] for k in z.files}
    cfg = json.loads(str(arrs["config"]))
    for k, v in arrs.items():
        if k == "config":
            continue
        want = np.int64 if k == "lengths" else np.float32
        if v.dtype != want:
            problems.append(f"{k} dtype {v.dtype}")
    seq, fin, st = reference(cfg, arrs)
    pairs = [("sequence", seq), ("final", fin)]
    if "state" in arrs:
        if st is None:
            problems.append("state stored but reference cannot build one")
        else:
            pairs.append(("state", st))
    for key, ref in pairs:
        got = arrs[key]
        if got.shape != ref.shape:
            problems.append(f"{key} shape {got.shape} != ref {ref.shape}")
            continue
        err = float(np.max(np.abs(got - ref))) if got.size else 0.0
        if not err <= atol:
            problems.append(f"{key} max abs err {err:.3g}")
    return problems


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------

def torch_cases():
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(1)
    ver = torch.__version__

    def case(name, *, F, H, T, B=None, L=1, bi=False, nonlin="tanh", bias=True,
             init=False, lengths=None, time_major=False, uniform=False, desc=""):
        seed = seed_of(name)
        torch.manual_seed(seed)
        rng = np.random.RandomState(seed)
        rnn = torch.nn.RNN(F, H, num_layers=L, nonlinearity=nonlin, bias=bias,
                           batch_first=not time_major, bidirectional=bi)
        if uniform:
            with torch.no_grad():
                for p in rnn.parameters():
                    p.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(p.shape)).astype(np.float32)))
        D = 2 if bi else 1
        if B is None:
            xshape = (T, F)
        elif time_major:
            xshape = (T, B, F)
        else:
            xshape = (B, T, F)
        x = rng.uniform(-1, 1, xshape).astype(np.float32)
        h0 = None
        if init:
            hshape = (L * D, H) if B is None else (L * D, B, H)
            h0 = rng.uniform(-1, 1, hshape).astype(np.float32)
        with torch.no_grad():
            xt = torch.from_numpy(x)
            h0t = None if h0 is None else torch.from_numpy(h0)
            if lengths is not None:
                packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=not time_major,
                                              enforce_sorted=False)
                out, hn = rnn(packed, h0t)
                out, _ = pad_packed_sequence(out, batch_first=not time_major, total_length=T)
            else:
                out, hn = rnn(xt, h0t)
        seq = out.numpy()
        hn = hn.numpy()
        final = np.concatenate([hn[-2], hn[-1]], axis=-1) if bi else hn[-1]
        weights = {k: v.numpy() for k, v in rnn.state_dict().items()}
        cfg = make_config("torch", ver, units=[H] * L, bidirectional=bi, merge="concat",
                          activation=nonlin, bias=bias, time_major=time_major,
                          description=desc + (" Weights uniform(-0.5,0.5)." if uniform else
                                              " torch default init U(-1/sqrt(H),1/sqrt(H)).")
                          + (" Run via pack_padded_sequence(enforce_sorted=False); sequence padded with zeros."
                             if lengths is not None else ""))
        return write_case(name, cfg, x, weights, seq, final, state=hn, initial_state=h0, lengths=lengths)

    yield case("torch_tanh_single", F=3, H=4, T=7, desc="1 layer tanh, single unbatched sequence (T,F).")
    yield case("torch_tanh_batch", F=3, H=5, T=6, B=3, desc="1 layer tanh, batch-first (B,T,F).")
    yield case("torch_relu_batch", F=4, H=5, T=8, B=2, nonlin="relu", uniform=True,
               desc="1 layer relu.")
    yield case("torch_nobias_batch", F=3, H=4, T=6, B=2, bias=False, desc="1 layer tanh, bias=False.")
    yield case("torch_2layer", F=3, H=4, T=6, B=2, L=2, desc="2 stacked layers tanh.")
    yield case("torch_3layer_relu", F=5, H=3, T=5, B=2, L=3, nonlin="relu", uniform=True,
               desc="3 stacked layers relu.")
    yield case("torch_bi_1layer", F=3, H=4, T=6, B=2, bi=True, desc="bidirectional 1 layer, concat.")
    yield case("torch_bi_2layer", F=2, H=3, T=5, B=3, L=2, bi=True,
               desc="bidirectional 2 layers; layer 1 input is 2H (concat).")
    yield case("torch_bi_single", F=3, H=3, T=5, bi=True, desc="bidirectional 1 layer, single unbatched sequence.")
    yield case("torch_init_single_2layer", F=3, H=4, T=5, L=2, init=True,
               desc="2 layers, single sequence, initial_state shaped (L*D,H).")
    yield case("torch_init_uni_2layer", F=3, H=4, T=6, B=2, L=2, init=True,
               desc="2 layers with initial_state (L*D,B,H).")
    yield case("torch_init_bi_2layer", F=3, H=3, T=5, B=2, L=2, bi=True, init=True,
               desc="bidirectional 2 layers with initial_state, index layer*2+direction.")
    yield case("torch_lengths_uni", F=3, H=4, T=7, B=3, lengths=[7, 3, 5],
               desc="1 layer, variable lengths.")
    yield case("torch_lengths_bi", F=3, H=4, T=6, B=3, bi=True, lengths=[2, 6, 4],
               desc="bidirectional 1 layer, variable lengths (backward starts at each row's last valid step).")
    yield case("torch_lengths_uni_init", F=2, H=4, T=6, B=3, L=2, init=True, lengths=[4, 6, 1],
               desc="2 layers, variable lengths, initial_state.")
    yield case("torch_lengths_bi_init", F=3, H=3, T=7, B=3, L=2, bi=True, init=True, lengths=[5, 2, 7],
               desc="bidirectional 2 layers, variable lengths, initial_state.")
    yield case("torch_time_major", F=3, H=4, T=6, B=2, time_major=True,
               desc="batch_first=False: x is (T,B,F), sequence (T,B,H).")
    yield case("torch_time_major_bi_lengths", F=2, H=3, T=5, B=3, bi=True, time_major=True,
               lengths=[5, 3, 1], init=True,
               desc="batch_first=False, bidirectional, variable lengths, initial_state.")


# --------------------------------------------------------------------------
# keras
# --------------------------------------------------------------------------

def keras_weights_to_torch(layer, k, bidirectional):
    """Map one Keras SimpleRNN / Bidirectional(SimpleRNN) layer to torch names."""
    out = {}
    subs = [(layer.forward_layer, ""), (layer.backward_layer, "_reverse")] if bidirectional else [(layer, "")]
    for sub, sfx in subs:
        w = sub.get_weights()
        out[f"weight_ih_l{k}{sfx}"] = w[0].T
        out[f"weight_hh_l{k}{sfx}"] = w[1].T
        if len(w) == 3:
            out[f"bias_ih_l{k}{sfx}"] = w[2]
            out[f"bias_hh_l{k}{sfx}"] = np.zeros_like(w[2])
    return out


def keras_cases():
    import keras
    ver = keras.__version__
    assert keras.backend.backend() == "torch", keras.backend.backend()

    def build(T, F, units, act, bias, bi, merge, go_backwards, init, last_seq):
        inp = keras.Input((T, F))
        inputs = [inp]
        h = inp
        layers = []
        top_states = None
        for k, H in enumerate(units):
            top = k == len(units) - 1
            rs = True if not top else last_seq
            want_state = top and not last_seq and len(units) == 1
            cell = keras.layers.SimpleRNN(H, activation=act, use_bias=bias, return_sequences=rs,
                                          go_backwards=go_backwards, return_state=want_state)
            layer = keras.layers.Bidirectional(cell, merge_mode=merge) if bi else cell
            kw = {}
            if init and k == 0:
                hs = [keras.Input((H,)) for _ in range(2 if bi else 1)]
                inputs += hs
                kw["initial_state"] = hs
            res = layer(h, **kw)
            if want_state:
                h, top_states = res[0], list(res[1:])
            else:
                h = res
            layers.append(layer)
        outs = [h] + (top_states or [])
        return keras.Model(inputs, outs if len(outs) > 1 else h), layers

    def case(name, *, F, T, units, B=2, single=False, act="tanh", bias=True, bi=False, merge="concat",
             go_backwards=False, init=False, uniform=False, scale=0.5, desc=""):
        seed = seed_of(name)
        keras.utils.set_random_seed(seed)
        rng = np.random.RandomState(seed)
        mseq, lseq = build(T, F, units, act, bias, bi, merge, go_backwards, init, True)
        mfin, _ = build(T, F, units, act, bias, bi, merge, go_backwards, init, False)
        ws = mseq.get_weights()
        if uniform:
            ws = [rng.uniform(-scale, scale, w.shape).astype(np.float32) for w in ws]
        elif bias:
            # Keras initialises biases to zeros; randomise them so the bias mapping is exercised.
            ws = [rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) if w.ndim == 1 else w for w in ws]
        mseq.set_weights(ws)
        mfin.set_weights(ws)
        Bn = 1 if single else B
        x = rng.uniform(-1, 1, (Bn, T, F)).astype(np.float32)
        D = 2 if bi else 1
        feeds = [x]
        h0 = None
        if init:
            h0 = rng.uniform(-1, 1, (D, Bn, units[0])).astype(np.float32)
            feeds += [h0[d] for d in range(D)]
        to_np = keras.ops.convert_to_numpy
        seq = to_np(mseq(feeds, training=False))
        fres = mfin(feeds, training=False)
        state = None
        if isinstance(fres, (list, tuple)):
            final = to_np(fres[0])
            state = np.stack([to_np(s) for s in fres[1:]])
        else:
            final = to_np(fres)
        if go_backwards:
            seq = seq[:, ::-1]  # Keras returns go_backwards outputs in processing order
        weights = {}
        for k, layer in enumerate(lseq):
            weights.update(keras_weights_to_torch(layer, k, bi))
        if h0 is not None and len(units) > 1:
            assert len(set(units)) == 1, "stored initial_state needs equal units"
            h0 = np.concatenate([h0, np.zeros(((len(units) - 1) * D, Bn, units[0]), np.float32)])
        if single:
            x, seq, final = x[0], seq[0], final[0]
            if state is not None:
                state = state[:, 0]
            if h0 is not None:
                h0 = h0[:, 0]
        description = desc
        if uniform:
            description += f" All weights uniform(-{scale},{scale})."
        else:
            description += " Keras default init (glorot_uniform kernel, orthogonal recurrent)" + (
                "; biases overwritten with uniform(-0.5,0.5)." if bias else ".")
        if go_backwards:
            description += (" Keras SimpleRNN(go_backwards=True): Keras returns the sequence in processing order"
                            " (reversed); stored `sequence` is flipped back to input-time order. `final` is Keras's"
                            " return_sequences=False output = state after processing t=0.")
        description += (" Converted: weight_ih=kernel.T, weight_hh=recurrent_kernel.T, bias_ih=bias, bias_hh=0.")
        cfg = make_config("keras", ver, units=units, bidirectional=bi, merge=merge if bi else "concat",
                          reverse=go_backwards, activation=act, bias=bias, description=description.strip())
        return write_case(name, cfg, x, weights, seq, final, state=state, initial_state=h0)

    for act in ["tanh", "relu", "sigmoid", "hard_sigmoid", "linear", "softsign", "softplus", "elu"]:
        # hard_sigmoid gets large weights so pre-activations reach its saturated parts (|a| >= 3).
        yield case(f"keras_act_{act}", F=3, T=6, units=[4], act=act,
                   uniform=act in ("relu", "linear", "elu", "hard_sigmoid"),
                   scale=3.0 if act == "hard_sigmoid" else 0.5,
                   desc=f"SimpleRNN(activation='{act}').")
    yield case("keras_tanh_single", F=3, T=5, units=[4], single=True,
               desc="SimpleRNN tanh; stored as a single unbatched sequence (T,F) (run in Keras as a batch of 1).")
    yield case("keras_nobias", F=3, T=6, units=[5], bias=False, desc="SimpleRNN(use_bias=False).")
    yield case("keras_go_backwards", F=3, T=7, units=[4], go_backwards=True,
               desc="SimpleRNN(go_backwards=True) stored as reverse=true.")
    for merge in ["concat", "sum", "mul", "ave"]:
        yield case(f"keras_bi_{merge}", F=3, T=6, units=[4], bi=True, merge=merge,
                   desc=f"Bidirectional(SimpleRNN, merge_mode='{merge}').")
    yield case("keras_stack2", F=4, T=6, units=[5, 3], desc="Stacked SimpleRNN units [5,3].")
    yield case("keras_stack3", F=3, T=6, B=3, units=[6, 4, 3], desc="Stacked SimpleRNN units [6,4,3].")
    yield case("keras_stack3_relu", F=3, T=5, units=[6, 4, 3], act="relu", uniform=True,
               desc="Stacked SimpleRNN relu units [6,4,3].")
    yield case("keras_stack_bi_concat", F=3, T=5, units=[4, 3], bi=True, merge="concat",
               desc="Two stacked Bidirectional(SimpleRNN) concat, units [4,3]: layer 1 input is 8.")
    yield case("keras_stack_bi_sum", F=3, T=5, units=[4, 3], bi=True, merge="sum",
               desc="Two stacked Bidirectional(SimpleRNN) sum, units [4,3]: layer 1 input is 4.")
    yield case("keras_init_uni", F=3, T=6, units=[4], init=True,
               desc="SimpleRNN called with initial_state=[h0].")
    yield case("keras_init_bi", F=3, T=6, units=[4], bi=True, init=True,
               desc="Bidirectional(SimpleRNN) called with initial_state=[h0_forward, h0_backward].")
    yield case("keras_init_stack2", F=3, T=5, units=[4, 4], init=True,
               desc="Stacked SimpleRNN [4,4]; initial_state only given to layer 0 in Keras, stored initial_state"
                    " has zeros for layer 1.")


# --------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------

ONNX_ACT = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def make_onnx_rnn_model(*, F, H, direction, act="tanh", clip=None, bias=True, seqlens=False, init=False,
                        layout=0, opset=17, with_y=True, weights_as_initializers=None):
    """Single-node ONNX RNN model.  Graph inputs: X, W, R, [B], [sequence_lens], [initial_h]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    D = 2 if direction == "bidirectional" else 1
    xshape = ["T", "batch", F] if layout == 0 else ["batch", "T", F]
    hshape = [D, "batch", H] if layout == 0 else ["batch", D, H]
    ginputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xshape)]
    inits = []
    names = ["X", "W", "R", "B" if bias else "", "sequence_lens" if seqlens else "", "initial_h" if init else ""]
    while names[-1] == "":
        names.pop()
    shapes = {"W": [D, H, F], "R": [D, H, H], "B": [D, 2 * H]}
    for n in ["W", "R", "B"]:
        if n not in names:
            continue
        if weights_as_initializers is not None:
            inits.append(numpy_helper.from_array(weights_as_initializers[n], n))
        else:
            ginputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]))
    if seqlens:
        ginputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"]))
    if init:
        ginputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, hshape))
    attrs = dict(hidden_size=H, direction=direction, activations=[ONNX_ACT[act]] * D, layout=layout)
    if clip is not None:
        attrs["clip"] = float(clip)
    node = helper.make_node("RNN", names, ["Y" if with_y else "", "Y_h"], **attrs)
    yshape = ["T", D, "batch", H] if layout == 0 else ["batch", "T", D, H]
    outs = ([helper.make_tensor_value_info("Y", TensorProto.FLOAT, yshape)] if with_y else []) + [
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, hshape)]
    graph = helper.make_graph([node], "rnn", ginputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rnncli-generate_golden")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnx_weights_to_torch(W, R, B, D):
    out = {}
    H = W.shape[1]
    for d in range(D):
        sfx = "_reverse" if (D == 2 and d == 1) else ""
        out[f"weight_ih_l0{sfx}"] = W[d]
        out[f"weight_hh_l0{sfx}"] = R[d]
        if B is not None:
            out[f"bias_ih_l0{sfx}"] = B[d, :H]
            out[f"bias_hh_l0{sfx}"] = B[d, H:]
    return out


def onnx_outputs_to_rnncli(Y, Y_h, layout):
    """Y: layout0 (T,D,B,H) / layout1 (B,T,D,H); Y_h: (D,B,H) / (B,D,H).
    Returns sequence ((T,B,D*H) for layout 0, (B,T,D*H) for layout 1), final (B,D*H), state (D,B,H)."""
    if layout == 0:
        T, D, B, H = Y.shape
        seq = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
        state = Y_h
    else:
        B, T, D, H = Y.shape
        seq = Y.reshape(B, T, D * H)
        state = Y_h.transpose(1, 0, 2)
    final = state.transpose(1, 0, 2).reshape(state.shape[1], -1)
    return seq, final, state


def onnx_cases():
    import onnxruntime as ort
    ver = ort.__version__

    def case(name, *, F, H, T, B, direction="forward", act="tanh", clip=None, bias=True, init=False,
             lengths=None, layout=1, scale=0.5, desc=""):
        seed = seed_of(name)
        rng = np.random.RandomState(seed)
        D = 2 if direction == "bidirectional" else 1
        # onnxruntime's CPU RNN kernel refuses layout=1 ("Batchwise recurrent operations (layout == 1) are
        # not supported"), so onnxruntime always runs the layout=0 model; layout=1 cases feed it the
        # transposed input and transpose the outputs back (and, where onnx.reference can run the real
        # layout=1 model -- tanh, no clip, no sequence_lens -- that result is cross-checked too).
        model = make_onnx_rnn_model(F=F, H=H, direction=direction, act=act, clip=clip, bias=bias,
                                    seqlens=lengths is not None, init=init, layout=0)
        W = rng.uniform(-scale, scale, (D, H, F)).astype(np.float32)
        R = rng.uniform(-scale, scale, (D, H, H)).astype(np.float32)
        Bw = rng.uniform(-scale, scale, (D, 2 * H)).astype(np.float32) if bias else None
        x_bf = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
        x_tm = x_bf.transpose(1, 0, 2).copy()
        x = x_bf if layout == 1 else x_tm
        feeds = {"X": x_tm, "W": W, "R": R}
        if bias:
            feeds["B"] = Bw
        if lengths is not None:
            feeds["sequence_lens"] = np.asarray(lengths, np.int32)
        h0 = None
        if init:
            h0 = rng.uniform(-1, 1, (D, B, H)).astype(np.float32)
            feeds["initial_h"] = h0
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        Y, Y_h = sess.run(["Y", "Y_h"], feeds)   # (T,D,B,H), (D,B,H)
        if layout == 1:
            Y = Y.transpose(2, 0, 1, 3)          # -> ONNX layout-1 Y (B,T,D,H)
            Y_h = Y_h.transpose(1, 0, 2)         # -> ONNX layout-1 Y_h (B,D,H)
            if act == "tanh" and clip is None and lengths is None:
                from onnx.reference import ReferenceEvaluator
                m1 = make_onnx_rnn_model(F=F, H=H, direction=direction, act=act, bias=bias, init=init, layout=1)
                f1 = dict(feeds, X=x_bf)
                if init:
                    f1["initial_h"] = h0.transpose(1, 0, 2).copy()
                Y1, Yh1 = ReferenceEvaluator(m1).run(None, f1)
                assert np.allclose(Y1, Y, atol=1e-5) and np.allclose(Yh1, Y_h, atol=1e-5), name
        seq, final, state = onnx_outputs_to_rnncli(Y, Y_h, layout)
        weights = onnx_weights_to_torch(W, R, Bw, D)
        cfg = make_config(
            "onnxruntime", ver, units=[H], bidirectional=D == 2, merge="concat", reverse=direction == "reverse",
            activation=act, bias=bias, clip=clip, time_major=layout == 0,
            description=(desc + f" Single ONNX RNN node (opset 17), direction={direction},"
                         f" activations={[ONNX_ACT[act]] * D}, layout={layout}"
                         f" (x is {'(B,T,F)' if layout else '(T,B,F)'})"
                         + (f", clip={clip}" if clip is not None else "")
                         + f"; weights uniform(-{scale},{scale})."
                         " Converted: weight_ih=W[d], weight_hh=R[d], bias_ih=B[d,:H], bias_hh=B[d,H:]"
                         " (direction d=1 -> _reverse suffix; direction=reverse uses the unsuffixed names)."
                         " Y/Y_h transposed to rnncli layout."
                         + (" onnxruntime refuses layout=1, so it ran the equivalent layout=0 model on the"
                            " transposed x/initial_h and its Y/Y_h were transposed to layout-1 shapes."
                            if layout == 1 else "")).strip())
        return write_case(name, cfg, x, weights, seq, final, state=state, initial_state=h0,
                          lengths=lengths)

    yield case("onnx_forward_layout1", F=3, H=4, T=6, B=2, layout=1, desc="Forward tanh, batch-first.")
    yield case("onnx_forward_layout0", F=3, H=4, T=6, B=2, layout=0, desc="Forward tanh, layout 0 = (T,B,F).")
    yield case("onnx_reverse", F=3, H=4, T=6, B=2, direction="reverse", desc="direction=reverse.")
    yield case("onnx_reverse_layout0", F=2, H=3, T=5, B=3, direction="reverse", layout=0,
               desc="direction=reverse, layout 0.")
    yield case("onnx_bidirectional", F=3, H=4, T=6, B=2, direction="bidirectional",
               desc="direction=bidirectional, merged as concat.")
    yield case("onnx_relu", F=3, H=5, T=7, B=2, act="relu", desc="Relu.")
    yield case("onnx_sigmoid", F=3, H=4, T=6, B=2, act="sigmoid", desc="Sigmoid.")
    yield case("onnx_clip_tanh", F=4, H=4, T=6, B=2, clip=0.3, scale=1.0,
               desc="Tanh with clip=0.3 applied to the pre-activation.")
    yield case("onnx_clip_relu_bi", F=3, H=3, T=5, B=2, act="relu", clip=0.5, scale=1.0,
               direction="bidirectional", desc="Relu with clip=0.5, bidirectional.")
    yield case("onnx_nobias", F=3, H=4, T=6, B=2, bias=False, desc="No B input.")
    yield case("onnx_initial_h_layout0", F=3, H=4, T=5, B=2, init=True, layout=0,
               desc="initial_h given, layout 0.")
    yield case("onnx_initial_h_bi_layout1", F=3, H=4, T=5, B=2, init=True, layout=1, direction="bidirectional",
               desc="initial_h given (B,D,H in ONNX), bidirectional, batch-first.")
    yield case("onnx_seqlens_forward", F=3, H=4, T=6, B=3, lengths=[6, 2, 4],
               desc="sequence_lens with rows shorter than T.")
    yield case("onnx_seqlens_reverse", F=3, H=4, T=6, B=3, lengths=[3, 6, 1], direction="reverse",
               desc="sequence_lens, direction=reverse.")
    yield case("onnx_seqlens_bi_init", F=3, H=3, T=6, B=3, lengths=[4, 6, 2], direction="bidirectional",
               init=True, desc="sequence_lens, bidirectional, initial_h.")
    yield case("onnx_seqlens_bi_layout0", F=2, H=4, T=5, B=2, lengths=[5, 3], direction="bidirectional",
               layout=0, desc="sequence_lens, bidirectional, layout 0.")


# --------------------------------------------------------------------------

def check_all(paths):
    bad = {}
    for p in paths:
        problems = check_file(p)
        if problems:
            bad[Path(p).name] = problems
    return bad


def main(argv):
    if "--check-only" in argv:
        paths = sorted(GOLDEN.glob("*.npz"))
    else:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN.glob("*.npz"):
            old.unlink()
        paths = []
        for gen in (torch_cases, keras_cases, onnx_cases):
            for p in gen():
                if p is not None:
                    paths.append(p)
                    print("wrote", p.relative_to(HERE))
    bad = check_all(paths)
    for name, problems in bad.items():
        print("SELF-CHECK MISMATCH", name, problems)
    print(f"{len(paths)} cases, {len(paths) - len(bad)} match the numpy reference to {ATOL}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
