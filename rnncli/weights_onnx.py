"""ONNX models in and out: graphs of ``RNN`` nodes and the reshaping around them.

Reading follows the data from the graph input through each RNN node to the output, keeping
track of what every axis of the tensor means (time, batch, direction, hidden) through Transpose,
Squeeze, Unsqueeze, Reshape, Reduce* and time-flipping Slice nodes. That is how it learns how
a bidirectional layer's two directions are merged (concatenated by Transpose + Reshape, or
summed, multiplied, averaged by a Reduce), and that a chain of RNN nodes is a stack of layers —
what ``torch.onnx.export`` writes for ``nn.RNN`` and what `write_onnx` writes. A node that
computes anything else (MatMul, Gemm, LSTM, …) is refused by name rather than silently dropped.

The onnx package (the ``rnncli[onnx]`` extra) is imported only here, when such a file is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from .errors import WeightsError
from .model import parts_of
from .weights import Found, Model, Part, from_onnx, read_bounded, require, shown

OPSET = 17
IR_VERSION = 8  # what torch.onnx.export writes for opset 17; onnxruntime reads it
PLUMBING = {
    "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Cast", "Shape", "Gather", "Constant",
    "ConstantOfShape", "Concat", "Slice", "ReduceSum", "ReduceMean", "ReduceProd", "Expand",
}  # fmt: skip
MERGE_OPS = {"ReduceSum": "sum", "ReduceMean": "ave", "ReduceProd": "mul"}
TO_ONNX = {
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1 / 6, 0.5),
}
_INT_MIN = -(2**31)  # Slice ends at or below this mean "through the first element"


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


class _Graph:
    """Lookups over an ONNX graph: constants, producers, consumers, graph inputs and outputs."""

    def __init__(self, onnx: Any, graph: Any, name: str) -> None:
        self.onnx, self.name = onnx, name
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for tensor in node.input:
                if tensor:
                    self.consumers.setdefault(tensor, []).append(node)
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]

    def attributes(self, node: Any) -> dict[str, Any]:
        helper = self.onnx.helper
        return {a.name: _text(helper.get_attribute_value(a)) for a in node.attribute}

    def label(self, node: Any) -> str:
        return f"node '{shown(node.name)}' ({shown(node.op_type)})" if node.name else f"a {shown(node.op_type)} node"

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output, else None (computed at run time)."""
        proto = self.initializers.get(tensor)
        if proto is None:
            node = self.producer.get(tensor)
            if node is None or node.op_type != "Constant":
                return None
            attributes = self.attributes(node)
            if "value" in attributes:
                proto = attributes["value"]
            else:
                for key in ("value_float", "value_floats", "value_int", "value_ints"):
                    if key in attributes:
                        return np.asarray(attributes[key])
                return None
        if proto.data_location == self.onnx.TensorProto.EXTERNAL:
            raise WeightsError(
                f"{self.name}: tensor '{shown(tensor)}' is stored in an external data file, which rnncli does not "
                "read; save the model with its weights inside (onnx.save(model, path, save_as_external_data=False))"
            )
        try:
            return self.onnx.numpy_helper.to_array(proto)
        except Exception as exc:  # malformed TensorProto: wrong sizes, unknown types
            raise WeightsError(f"{self.name}: tensor '{shown(tensor)}' is malformed ({shown(exc, 100)})") from None

    def ints(self, node: Any, attribute: str, slot: int) -> list[int] | None:
        """Integer arguments given as an attribute (older opsets) or as a constant input (newer ones)."""
        attributes = self.attributes(node)
        if attribute in attributes:
            return [int(v) for v in np.atleast_1d(attributes[attribute])]
        if len(node.input) > slot and node.input[slot]:
            value = self.constant(node.input[slot])
            if value is None:
                raise WeightsError(f"{self.name}: {self.label(node)} computes its {attribute} at run time")
            return [int(v) for v in np.atleast_1d(value)]
        return None


def read_onnx(fp: BinaryIO, name: str) -> Found:
    """An ONNX model whose graph is a chain of RNN nodes (one per layer), as one rnncli model."""
    onnx = require("onnx", "onnx", f"{name}: reading .onnx")
    data = read_bounded(fp, name)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"{name}: not a valid ONNX model ({shown(reason, 100)}); the file is damaged or cut short"
        ) from None
    graph = _Graph(onnx, proto.graph, name)
    rnns = [node for node in graph.nodes if node.op_type == "RNN" and node.domain in ("", "ai.onnx")]
    for node in graph.nodes:
        if node.op_type not in PLUMBING and node not in rnns:
            hint = " (rnncli runs simple RNN nodes, not LSTM or GRU)" if node.op_type in ("LSTM", "GRU") else ""
            raise WeightsError(
                f"{name}: the graph has {graph.label(node)}{hint}; rnncli runs ONNX graphs made of RNN nodes and the "
                "reshaping around them (as torch.onnx.export writes for nn.RNN), so it cannot run this model"
            )
    if not rnns:
        kinds = sorted({node.op_type for node in graph.nodes})
        raise WeightsError(
            f"{name}: the graph has no RNN node (it has {', '.join(map(shown, kinds[:6])) or 'no nodes'}); export "
            "with torch.onnx.export(..., dynamo=False), whose graph keeps nn.RNN as an RNN node"
        )
    links = {id(node): _follow(graph, node) for node in rnns}
    following = {id(link["next"]) for link in links.values() if link["next"] is not None}
    starts = [node for node in rnns if id(node) not in following]
    if len(starts) != 1:
        raise WeightsError(f"{name}: the graph holds {len(starts)} separate chains of RNN nodes; rnncli runs one")
    chain, node = [], starts[0]
    while node is not None:
        chain.append(node)
        node = links[id(node)]["next"]
    if len(chain) != len(rnns):
        raise WeightsError(f"{name}: {len(rnns) - len(chain)} RNN nodes are not on the chain from the input")
    input_name, input_layout = _input_of(graph, chain[0])
    parts, tensors, nodes, initial = [], {}, [], []
    for index, node in enumerate(chain):
        link = links[id(node)]
        part, found, facts, start = _part(graph, node, link, index)
        parts.append(part)
        tensors.update(found)
        nodes.append(facts)
        initial.append(start)
    facts = {
        "opset": {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import},
        "producer": shown(f"{proto.producer_name} {proto.producer_version}".strip()) or None,
        "input": {"name": input_name, "layout": input_layout},
        "outputs": graph.outputs,
        "rnn_nodes": nodes,
    }
    fed = [start for start in initial if isinstance(start, str)]
    warnings = [
        f"{name}: the graph takes the initial state as input '{shown(fed_by)}'; rnncli starts from zeros unless "
        "--initial-state FILE is given"
        for fed_by in dict.fromkeys(fed)
    ]
    state = _initial_state(initial, parts, name)
    return Found(parts, None, tensors, facts, layout=input_layout, initial_state=state, warnings=warnings)


def _initial_state(starts: list[Any], parts: list[Part], name: str) -> tuple[np.ndarray, ...] | None:
    """One (B, H) array per cell from the RNN nodes' constant initial_h (D, B, H), zeros for the others;
    None when no node has one."""
    constants = [start for start in starts if isinstance(start, np.ndarray)]
    if not constants:
        return None
    batches = {start.shape[1] for start in constants}
    if len(batches) != 1:
        raise WeightsError(
            f"{name}: the RNN nodes' constant initial_h are for different batch sizes {sorted(batches)}; "
            "export the model with one initial state"
        )
    batch = batches.pop()
    state = []
    for start, part in zip(starts, parts):
        (cells,) = part.layers
        for d, cell in enumerate(cells):
            given = isinstance(start, np.ndarray)
            state.append(start[d] if given else np.zeros((batch, cell.units), cell.w_hh.dtype))
    return tuple(state)


def _part(graph: _Graph, node: Any, link: dict[str, Any], index: int) -> tuple[Part, dict[str, np.ndarray], dict]:
    name, attributes = graph.name, graph.attributes(node)
    where = f"{name}: {graph.label(node)}"
    slots = list(node.input) + [""] * (6 - len(node.input))
    _, w_name, r_name, b_name, lengths, initial = slots[:6]
    values = {}
    for label, tensor in (("W", w_name), ("R", r_name), ("B", b_name)):
        if not tensor:
            continue
        value = graph.constant(tensor)
        if value is None:
            raise WeightsError(
                f"{where}: {label} ('{shown(tensor)}') is computed at run time; rnncli needs stored weights"
            )
        values[label] = value
    if "W" not in values or "R" not in values:
        raise WeightsError(f"{where}: W and R are both needed")
    if lengths and graph.constant(lengths) is not None:
        raise WeightsError(f"{where}: sequence_lens is fixed in the graph; rnncli takes lengths from --lengths")
    start = _initial_h(graph, initial, where) if initial else None
    hidden = attributes.get("hidden_size")
    model = from_onnx(
        values["W"],
        values["R"],
        values.get("B"),
        direction=attributes.get("direction", "forward"),
        activations=attributes.get("activations"),
        activation_alpha=attributes.get("activation_alpha"),
        activation_beta=attributes.get("activation_beta"),
        clip=attributes.get("clip"),
        source=where,
    )
    if hidden is not None and hidden != model.units[0]:
        raise WeightsError(
            f"{where}: hidden_size={hidden} but W has shape {values['W'].shape} ({model.units[0]} units)"
        )
    if isinstance(start, np.ndarray):
        if start.ndim == 3 and attributes.get("layout", 0) == 1:
            start = start.transpose(1, 0, 2)  # layout 1 keeps initial_h as (B, D, H)
        if start.ndim != 3 or start.shape[0] != model.directions or start.shape[2] != model.units[0]:
            raise WeightsError(
                f"{where}: initial_h has shape {start.shape}, not (directions={model.directions}, batch, "
                f"hidden={model.units[0]})"
            )
    settings = {"activation": model.activation, "reverse": model.reverse, "clip": model.clip, "leak": 1.0}
    if model.directions == 2:
        settings["merge"] = link["merge"] or "concat"
    origin = f"graph input '{shown(start)}'" if isinstance(start, str) else "zeros" if start is None else "constant"
    named = (("W", w_name), ("R", r_name), ("B", b_name))
    tensors = {f"{shown(tensor)} ({label})": values[label] for label, tensor in named if label in values}
    facts = {
        "name": node.name,
        "direction": attributes.get("direction", "forward"),
        "hidden_size": model.units[0],
        "activations": attributes.get("activations") or ["Tanh"] * model.directions,
        "clip": model.clip,
        "layout": attributes.get("layout", 0),
        "merge": settings.get("merge"),
        "flipped": link["flip"],
        "initial_h": origin,
    }
    part = Part(model.layers, settings, link["flip"], f"RNN node {index} ('{shown(node.name)}')")
    return part, tensors, facts, start


_SHAPING = ("Slice", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Cast", "Expand")


def _initial_h(graph: _Graph, tensor: str, where: str) -> str | np.ndarray | None:
    """Where an RNN node's initial_h comes from: a graph input (its name), a constant tensor (its value)
    or zeros (None)."""
    reshaped = False
    for _ in range(64):
        if tensor in graph.inputs:
            return tensor
        value = graph.constant(tensor)
        if value is not None:
            if not np.any(value != 0):
                return None
            if reshaped:
                break
            return value
        node = graph.producer.get(tensor)
        if node is None:
            break
        if node.op_type == "ConstantOfShape":
            fill = graph.attributes(node).get("value")
            if fill is None or not np.any(graph.onnx.numpy_helper.to_array(fill) != 0):
                return None
            break
        if node.op_type not in _SHAPING:
            break
        reshaped = reshaped or node.op_type not in ("Identity", "Cast")
        tensor = node.input[0]
    raise WeightsError(
        f"{where}: initial_h is neither zeros, a stored (directions, batch, hidden) tensor nor a graph input; "
        "export the model with a zero initial state and pass yours with --initial-state"
    )


def _input_of(graph: _Graph, node: Any) -> tuple[str, str]:
    """The graph input feeding the first RNN node (through Transpose/Identity/Cast), and its layout."""
    layout = graph.attributes(node).get("layout", 0)
    axes = ["B", "T", "F"] if layout == 1 else ["T", "B", "F"]
    tensor = node.input[0]
    for _ in range(64):
        if tensor in graph.inputs:
            return tensor, "batch-first" if axes.index("B") < axes.index("T") else "time-major"
        source = graph.producer.get(tensor)
        if source is None or source.op_type not in ("Transpose", "Identity", "Cast"):
            what = graph.label(source) if source is not None else f"'{shown(tensor)}', a constant"
            raise WeightsError(
                f"{graph.name}: the first RNN node's input comes from {what}; rnncli needs it to come from a graph "
                "input (perhaps transposed)"
            )
        if source.op_type == "Transpose":
            perm = graph.attributes(source).get("perm") or list(range(len(axes)))[::-1]
            before = [""] * len(axes)
            for i, p in enumerate(perm):
                before[p] = axes[i]
            axes = before
        tensor = source.input[0]
    raise WeightsError(f"{graph.name}: the first RNN node's input passes through too many nodes")


def _follow(graph: _Graph, node: Any) -> dict[str, Any]:
    """From an RNN node's Y to the next RNN node or a graph output: the merge, any time flip, and the next node."""
    attributes = graph.attributes(node)
    directions = 2 if attributes.get("direction") == "bidirectional" else 1
    hidden = attributes.get("hidden_size")
    layout = attributes.get("layout", 0)
    axes = ["B", "T", "D", "H"] if layout == 1 else ["T", "D", "B", "H"]
    state = {"merge": None, "flip": False, "next": None}
    tensor = node.output[0] if node.output else ""
    if not tensor:
        return state
    for _ in range(256):
        consumers = [c for c in graph.consumers.get(tensor, []) if c.op_type != "Shape"]
        if not consumers:
            return state
        if len(consumers) > 1:
            raise WeightsError(
                f"{graph.name}: the output of {graph.label(node)} branches into {len(consumers)} nodes; rnncli runs "
                "a single chain"
            )
        step = consumers[0]
        if step.op_type == "RNN":
            if step.input[0] != tensor:
                raise WeightsError(f"{graph.name}: {graph.label(step)} takes an RNN output as something else than X")
            wanted = ["B", "T"] if graph.attributes(step).get("layout", 0) == 1 else ["T", "B"]
            if len(axes) != 3 or axes[:2] != wanted or axes[2] not in ("H", "DH"):
                raise WeightsError(
                    f"{graph.name}: {graph.label(step)} reads the output of {graph.label(node)} with axes "
                    f"({', '.join(axes)}); rnncli needs (time, batch, features) between RNN nodes"
                )
            if directions == 2 and state["merge"] is None:
                state["merge"] = "concat"
            state["next"] = step
            return state
        axes = _apply(graph, step, axes, state, directions, hidden)
        outputs = [o for o in step.output if o]
        tensor = outputs[0] if outputs else ""
        if not tensor:
            return state
    raise WeightsError(f"{graph.name}: the output of {graph.label(node)} passes through too many nodes")


def _apply(graph: _Graph, step: Any, axes: list[str], state: dict[str, Any], directions: int, hidden: Any) -> list[str]:
    """How one node on an RNN output's path changes the meaning of the axes (and the merge, and the time order)."""
    op, where = step.op_type, f"{graph.name}: {graph.label(step)}"
    rank = len(axes)

    def positions(values: list[int] | None, size: int) -> list[int]:
        if values is None:
            raise WeightsError(f"{where} on an RNN output has no axes; rnncli needs them spelled out")
        if any(not -size <= v < size for v in values):
            raise WeightsError(f"{where} names axes {values} of a {size}-D tensor")
        return sorted(v % size for v in values)

    if op in ("Identity", "Cast"):
        if op == "Cast" and graph.attributes(step).get("to") not in (1, 11):  # float, double
            raise WeightsError(f"{where} changes the output to a non-float type")
        return axes
    if op == "Transpose":
        perm = graph.attributes(step).get("perm") or list(range(rank))[::-1]
        if sorted(perm) != list(range(rank)):
            raise WeightsError(f"{where} has perm {perm} for a {rank}-D tensor")
        return [axes[p] for p in perm]
    if op == "Squeeze":
        drop = graph.ints(step, "axes", 1)
        if drop is None:
            drop = [i for i, a in enumerate(axes) if a == "1" or (a == "D" and directions == 1)]
        drop = positions(drop, rank)
        for i in drop:
            if axes[i] != "1" and not (axes[i] == "D" and directions == 1):
                raise WeightsError(f"{where} squeezes the {_AXIS_NAMES.get(axes[i], axes[i])} axis, which is not 1")
        return [a for i, a in enumerate(axes) if i not in drop]
    if op == "Unsqueeze":
        new = graph.ints(step, "axes", 1)
        added = positions(new, rank + len(new or []))
        out = list(axes)
        for i in added:
            out.insert(i, "1")
        return out
    if op in MERGE_OPS:
        reduced = positions(graph.ints(step, "axes", 1), rank)
        if [axes[i] for i in reduced] != ["D"] or directions != 2:
            raise WeightsError(
                f"{where} reduces over {[axes[i] for i in reduced]}; rnncli merges only the two directions"
            )
        state["merge"] = MERGE_OPS[op]
        keep = graph.attributes(step).get("keepdims", 1)
        return [("1" if a == "D" else a) for a in axes] if keep else [a for a in axes if a != "D"]
    if op == "Reshape":
        shape = graph.constant(step.input[1]) if len(step.input) > 1 else None
        if shape is None:
            raise WeightsError(f"{where} computes its shape at run time; rnncli needs a constant shape here")
        shape = [int(v) for v in np.atleast_1d(shape)]
        out = []
        for i, size in enumerate(shape):
            if size == 0 and i < rank:
                out.append(axes[i])
                continue
            if i != len(shape) - 1:
                raise WeightsError(
                    f"{where} reshapes to {shape}; rnncli follows only [0, …, 0, -1] merges of trailing axes"
                )
            merged = [a for a in axes[i:] if a != "1" and not (a == "D" and directions == 1)]
            if merged == ["H"]:
                units = hidden or 0
                out.append("H")
            elif merged in (["D", "H"], ["DH"]):
                units = (hidden or 0) * 2
                out.append("DH")
                if state["merge"] is None:
                    state["merge"] = "concat"
            else:
                raise WeightsError(f"{where} mixes the axes ({', '.join(axes[i:])}) of the RNN output")
            if size not in (-1, units):
                raise WeightsError(f"{where} reshapes the features to {size}, not {units}")
        return out
    if op == "Slice":
        starts, ends = graph.ints(step, "starts", 1), graph.ints(step, "ends", 2)
        sliced = graph.ints(step, "axes", 3) or list(range(len(starts or [])))
        steps = graph.ints(step, "steps", 4) or [1] * len(sliced)
        sliced = positions(sliced, rank)
        flip = len(sliced) == 1 and axes[sliced[0]] == "T" and steps == [-1] and starts == [-1]
        if not (flip and ends is not None and ends[0] <= _INT_MIN):
            raise WeightsError(f"{where} keeps part of the RNN output; rnncli follows only a Slice that flips time")
        state["flip"] = not state["flip"]
        return axes
    raise WeightsError(
        f"{where} on the RNN output path; rnncli follows only Transpose, Reshape, Squeeze, Unsqueeze, Cast, "
        "ReduceSum/Mean/Prod over directions and a time-flipping Slice there"
    )


_AXIS_NAMES = {"T": "time", "B": "batch", "D": "direction", "H": "hidden", "DH": "features"}


# --- writing ---------------------------------------------------------------------------------------


def write_onnx(model: Model, fp: BinaryIO, *, return_mode: str | None = None, layout: str | None = None) -> list[str]:
    """An ONNX model (opset 17) that onnxruntime runs with rnncli's outputs.

    Input ``x`` (batch, time, features); outputs ``y`` (batch, time, output) — the sequence — and
    ``final`` (batch, output). With `layout` "time-major", ``x`` and ``y`` are (time, batch, …) instead.
    One RNN node per layer, directions merged between them.
    """
    onnx = require("onnx", "onnx", "writing .onnx")
    helper, numpy_helper, tensor_proto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    element = tensor_proto.DOUBLE if model.dtype == np.float64 else tensor_proto.FLOAT
    for part, _ in parts_of(model):
        if part.leak != 1:
            raise WeightsError(
                f".onnx cannot hold this model: the ONNX RNN operator has no leaky integration (leak {part.leak:g}); "
                "write .npz or .safetensors"
            )
    nodes: list[Any] = []
    initializers: list[Any] = []
    counter = iter(range(1 << 30))

    def name(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def ints(values: Sequence[int]) -> str:
        tensor = name("ints")
        initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), tensor))
        return tensor

    def merge(tensor: str, directions: int, how: str, axis: int) -> str:
        """Y (T, D, B, H) with axis=1, or Y_h (D, B, H) with axis=0, merged to (…, B, H')."""
        out = name("merged")
        if directions == 1:
            nodes.append(helper.make_node("Squeeze", [tensor, ints([axis])], [out]))
        elif how == "concat":
            moved = name("moved")
            perm = [0, 2, 1, 3] if axis == 1 else [1, 0, 2]
            nodes.append(helper.make_node("Transpose", [tensor], [moved], perm=perm))
            nodes.append(helper.make_node("Reshape", [moved, ints([0, 0, -1] if axis == 1 else [0, -1])], [out]))
        elif how == "sum":
            nodes.append(helper.make_node("ReduceSum", [tensor, ints([axis])], [out], keepdims=0))
        else:
            op = "ReduceMean" if how == "ave" else "ReduceProd"
            nodes.append(helper.make_node(op, [tensor], [out], axes=[axis], keepdims=0))
        return out

    time_major = layout == "time-major"
    current = "x" if time_major else name("x_time_major")
    if not time_major:
        nodes.append(helper.make_node("Transpose", ["x"], [current], perm=[1, 0, 2]))
    final = None
    layer_index = 0
    parts = parts_of(model)
    for p, (part, flip) in enumerate(parts):
        onnx_name, alpha, beta = TO_ONNX[part.activation]
        for k, layer in enumerate(part.layers):
            last = p == len(parts) - 1 and k == len(part.layers) - 1
            directions, units = len(layer), layer[0].units
            prefix = f"rnn_l{layer_index}"
            initializers.append(numpy_helper.from_array(np.stack([c.w_ih for c in layer]), f"{prefix}_W"))
            initializers.append(numpy_helper.from_array(np.stack([c.w_hh for c in layer]), f"{prefix}_R"))
            inputs = [current, f"{prefix}_W", f"{prefix}_R"]
            if part.has_bias:
                bias = np.stack([np.concatenate([c.b_ih, c.b_hh]) for c in layer])
                initializers.append(numpy_helper.from_array(bias, f"{prefix}_B"))
                inputs.append(f"{prefix}_B")
            direction = "bidirectional" if directions == 2 else "reverse" if part.reverse else "forward"
            extra: dict[str, Any] = {}
            if alpha is not None:
                extra["activation_alpha"] = [alpha] * directions
            if beta is not None:
                extra["activation_beta"] = [beta] * directions
            if part.clip is not None:
                extra["clip"] = float(part.clip)
            y, y_h = f"{prefix}_Y", (f"{prefix}_Y_h" if last else "")
            nodes.append(
                helper.make_node(
                    "RNN",
                    inputs,
                    [y, y_h] if y_h else [y],
                    name=prefix,
                    hidden_size=units,
                    direction=direction,
                    activations=[onnx_name] * directions,
                    **extra,
                )
            )
            current = merge(y, directions, part.merge, axis=1)
            if y_h:
                final = merge(y_h, directions, part.merge, axis=0)
            layer_index += 1
        if flip:
            flipped = name("flipped")
            nodes.append(
                helper.make_node("Slice", [current, ints([-1]), ints([-(2**63)]), ints([0]), ints([-1])], [flipped])
            )
            current = flipped
    if time_major:
        nodes.append(helper.make_node("Identity", [current], ["y"]))
    else:
        nodes.append(helper.make_node("Transpose", [current], ["y"], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Identity", [final], ["final"]))
    axes = ["time", "batch"] if time_major else ["batch", "time"]
    graph = helper.make_graph(
        nodes,
        "rnncli",
        [helper.make_tensor_value_info("x", element, [*axes, model.input_size])],
        [
            helper.make_tensor_value_info("y", element, [*axes, model.output_size]),
            helper.make_tensor_value_info("final", element, ["batch", model.output_size]),
        ],
        initializers,
    )
    from . import __version__

    proto = helper.make_model(
        graph,
        producer_name="rnncli",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    if return_mode == "final":
        proto.doc_string = "the model's own output is 'final' (Keras return_sequences=False)"
    fp.write(proto.SerializeToString())
    notes = []
    if model.dtype == np.float64:
        notes.append("the ONNX model is float64; onnxruntime has no float64 RNN kernel: convert with --dtype float32")
    return notes
