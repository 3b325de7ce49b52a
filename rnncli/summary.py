"""Human-readable output on stderr: the run summary table, warnings, array previews and heatmaps."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich import box
from rich.color import Color
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .errors import byte_size

# Wider than any row naming a path (PATH_MAX is 4096) can be: rich wraps only at the console width, and
# its table layout costs the same at any width.
_UNWRAPPED_WIDTH = 1 << 16
# The width of drawings (previews, heatmaps) when the console is not a terminal.
_DRAWING_WIDTH = 80


def text_console(stderr: bool = True) -> Console:
    """A console for people's text: on a terminal it wraps to the window; in a file or pipe, never
    (paths in logs stay whole and greppable), even when FORCE_COLOR asks for colours there."""
    console = Console(stderr=stderr, highlight=False)
    if not _on_a_terminal(console):
        console.width = _UNWRAPPED_WIDTH
    return console


def stderr_console() -> Console:
    """The one console summaries, warnings and progress go to."""
    return text_console(stderr=True)


def _on_a_terminal(console: Console) -> bool:
    """Whether the console writes to a real terminal (rich's `is_terminal` is also true under FORCE_COLOR
    or TTY_COMPATIBLE, which CI logs set)."""
    try:
        return console.file.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _drawing_width(console: Console) -> int:
    return console.width if _on_a_terminal(console) else _DRAWING_WIDTH


def _shape(shape: Any) -> str:
    return str(tuple(int(n) for n in shape))


def _which(numbers: list[int]) -> str:
    """1-based layer numbers as "layer 2", "layers 3–4" or "layers 1, 3–4"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    spans = [str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    return f"layer{'s' if len(numbers) > 1 else ''} {', '.join(spans)}"


def _per_layer(model: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per layer, from the model's parts."""
    return [
        {
            "activation": part["activation"],
            "merge": part["merge"] if part["directions"] == 2 else None,
            "reverse": part["reverse"] and part["directions"] == 1,
            "bias": part["bias"],
            "clip": part["clip"],
            "leak": None if part["leak"] in (1, None) else part["leak"],
        }
        for part in model["parts"]
        for _ in part["units"]
    ]


def _differences(layers: list[dict[str, Any]]) -> tuple[str, str, str]:
    """The activations, the directions, and bias/clip/leak, each named layer by layer where layers differ:
    ("relu, sigmoid", "layer 2 reversed, layers 3–4 bidirectional (ave, concat)", "layer 4 no bias")."""
    count = len(layers)

    def where(numbers: list[int]) -> str:
        return "" if len(numbers) == count else _which(numbers) + " "

    activations = [layer["activation"] for layer in layers]
    structure = []
    backwards = [i for i, layer in enumerate(layers, 1) if layer["reverse"]]
    if backwards:
        structure.append("reversed in time" if len(backwards) == count else f"{_which(backwards)} reversed")
    both = [i for i, layer in enumerate(layers, 1) if layer["merge"]]
    if both:
        merges = [layers[i - 1]["merge"] for i in both]
        merged = merges[0] if len(set(merges)) == 1 else ", ".join(merges)
        structure.append(f"{where(both)}bidirectional ({merged})")
    extras = []
    unbiased = [i for i, layer in enumerate(layers, 1) if not layer["bias"]]
    if unbiased:
        extras.append(f"{where(unbiased)}no bias")
    for key in ("clip", "leak"):
        values = [layer[key] for layer in layers]
        for value in dict.fromkeys(v for v in values if v is not None):
            extras.append(f"{where([i for i, v in enumerate(values, 1) if v == value])}{key} {value:g}")
    shown = activations[0] if len(set(activations)) == 1 else ", ".join(activations)
    return shown, ", ".join(structure), ", ".join(extras)


def _model_row(model: dict[str, Any]) -> str:
    """The model row, "1 layer × 64 units · tanh · 4,416 parameters · float32"; layers that differ are named."""
    units, layers = model["units"], _per_layer(model)
    sizes = str(units[0]) if len(set(units)) == 1 else ",".join(map(str, units))
    text = f"{len(units)} layer{'s' if len(units) > 1 else ''} × {sizes} units"
    activations, structure, extras = _differences(layers)
    counted = f"{model['parameters']:,} parameters · {model['dtype']}"
    if all(layer == layers[0] for layer in layers):  # "2 layers × 4 units, bidirectional (sum) · tanh, no bias · …"
        settings = ", ".join(filter(None, [activations, extras]))
        return f"{text}{', ' + structure if structure else ''} · {settings} · {counted}"
    return " · ".join(filter(None, [text, activations, structure, extras, counted]))


def _layout(inp: dict[str, Any]) -> str:
    """For 3-D input run time-major, " · time-major (from the ONNX graph)"; nothing for the default."""
    if inp.get("layout") != "time-major":
        return ""
    return " · time-major" + (f" (from {inp['layout_from']})" if inp.get("layout_from") else "")


def render_summary(console: Console, facts: dict[str, Any]) -> None:
    """The run summary: input, model, output, time, value statistics."""
    inp, model, out, timing = facts["input"], facts["model"], facts["output"], facts["timing"]
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title="rnncli run", title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    source = inp["source"] + (f"[{inp['key']}]" if inp.get("key") else "")
    table.add_row("input", f"{source} · {inp['format']} · {_shape(inp['shape'])} {inp['dtype']}{_layout(inp)}")
    table.add_row("model", _model_row(model))
    state = " · initial state from the weights file" if model.get("initial_state") else ""
    table.add_row("weights", f"{model['origin']}{state} · {model['engine']} engine")
    for item in out["items"]:
        table.add_row(
            "output", f"{item['name']} {_shape(item['shape'])} {item['dtype']} → {out['destination']} ({out['format']})"
        )
    for label, path in out.get("also", {}).items():
        table.add_row("saved", f"{label} → {path}")
    table.add_row(
        "time",
        f"{timing['seconds']:.3g} s · {timing['timesteps_per_second']:,.0f} timesteps/s "
        f"({timing['timesteps']:,} steps)",
    )
    stats = out["stats"]
    if stats["min"] is not None:
        values = f"min {stats['min']:.4g} · mean {stats['mean']:.4g} · max {stats['max']:.4g}"
        if stats["saturated"] is not None:
            values += f" · saturated {stats['saturated']:.1%}"
        table.add_row("values", values)
    nonfinite = [
        f"{counts['nan']:,} NaN and {counts['inf']:,} Inf in the {where}"
        for where, counts in (("input", inp), ("output", stats))
        if counts.get("nan") or counts.get("inf")
    ]
    if nonfinite:
        table.add_row("NaN/Inf", " · ".join(nonfinite))
    console.print(table)


def render_warnings(console: Console, warnings: list[str]) -> None:
    for message in warnings:
        console.print(Text("warning: ", style="bold yellow") + Text(message))


def render_preview(console: Console, array: np.ndarray, name: str) -> None:
    """A short look at an array instead of binary on a terminal, with how to save it."""
    with np.printoptions(precision=4, threshold=60, edgeitems=3, suppress=True, linewidth=_drawing_width(console)):
        text = np.array2string(array)
    console.print(Text(f"{name} {_shape(array.shape)} {array.dtype}:", style="bold"))
    console.print(Text(text))
    console.print(
        Text(
            "stdout is a terminal, so no binary was written. Save with -o FILE.npy, "
            "pipe into another program, or print text with --to csv.",
            style="dim",
        )
    )


def _color(value: float) -> Color:
    """Diverging blue (-1) – near-black (0) – red (+1)."""
    if not np.isfinite(value):
        return Color.from_rgb(255, 255, 0)
    v = float(np.clip(value, -1, 1))
    strength = int(40 + 215 * abs(v))
    if v >= 0:
        return Color.from_rgb(strength, 40, 40)
    return Color.from_rgb(40, 40 + int(0.5 * (strength - 40)), strength)


def _downsample(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    n = values.shape[axis]
    if n <= size:
        return values
    edges = np.linspace(0, n, size + 1).astype(int)
    return np.stack(
        [values.take(range(a, b), axis=axis).mean(axis=axis) for a, b in zip(edges[:-1], edges[1:])], axis=axis
    )


def render_heatmap(console: Console, sequence: np.ndarray, note: str = "", max_rows: int = 16) -> None:
    """Units × time as coloured half-blocks (two units per text row), downsampled to the terminal."""
    values = np.asarray(sequence, dtype=np.float64).T  # (units, time)
    width = max(10, _drawing_width(console) - 8)
    values = _downsample(_downsample(values, 2 * max_rows, 0), width, 1)
    scale = np.nanmax(np.abs(values[np.isfinite(values)])) if np.isfinite(values).any() else 1.0
    if scale > 1 or scale == 0:
        values = values / (scale or 1.0)
    if values.shape[0] % 2:
        values = np.vstack([values, np.zeros((1, values.shape[1]))])
    console.print(
        Text(f"heatmap: units ↓ {sequence.shape[1]} × time → {sequence.shape[0]}{note}; red +, blue −", style="dim")
    )
    for top, bottom in zip(values[0::2], values[1::2]):
        line = Text()
        for a, b in zip(top, bottom):
            line.append("▀", Style(color=_color(a), bgcolor=_color(b)))
        console.print(line, no_wrap=True, crop=True)


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _bytes(count: int | None) -> str:
    return "—" if count is None else byte_size(count, "B")


def render_weights(console: Console, facts: dict[str, Any]) -> None:
    """`rnncli weights inspect`: the model a weights file holds, its parts, and its tensors."""
    model = facts["model"]
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title="rnncli weights", title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    table.add_row("file", Text(f"{facts['file']} · {facts['format']}"))
    units = ",".join(map(str, model["units"]))
    kind = "a stack of parts with their own settings (Keras Sequential)" if model["kind"] == "stack" else "one RNN"
    table.add_row(
        "model",
        f"{model['layers']} layer{'s' if model['layers'] > 1 else ''} × {units} units · {model['input_size']} inputs → "
        f"{model['output_size']} outputs · {model['parameters']:,} parameters · {model['dtype']} · {kind}",
    )
    for i, part in enumerate(model["parts"]):
        details = [part["activation"]]
        if part["directions"] == 2:
            details.append(f"bidirectional ({part['merge']})")
        elif part["reverse"]:
            details.append("go_backwards (outputs in processing order)" if part["keras_order"] else "reversed in time")
        details.append("bias" if part["bias"] else "no bias")
        if part["clip"] is not None:
            details.append(f"clip {part['clip']:g}")
        if part["leak"] != 1:
            details.append(f"leak {part['leak']:g}")
        label = "layers" if len(model["parts"]) == 1 else f"part {i}"
        units = ",".join(map(str, part["units"]))
        table.add_row(label, f"{part['layers']} × {units} units · {', '.join(details)}")
    stored = ", ".join(f"{k}={v}" for k, v in facts["stored"].items()) or "none"
    table.add_row("stored", Text(stored))
    if facts["not_stored"]:
        table.add_row("not stored", Text(f"{', '.join(facts['not_stored'])} (defaults, or the options given)"))
    if facts["return"]:
        table.add_row("returns", f"{facts['return']} (the model's own choice; --return overrides it)")
    if facts["layout"] == "time-major":
        table.add_row("takes", "time-major input: 3-D data are read and written as (timesteps, batch, features)")
    if facts["initial_state"]:
        shapes = ", ".join(_shape(shape) for shape in facts["initial_state"])
        table.add_row("initial state", f"{shapes} (applied unless --initial-state FILE is given)")
    for message in facts["warnings"]:
        table.add_row("warning", Text(message, style="yellow"))
    for key, value in facts["facts"].items():
        if isinstance(value, (str, int, float)) and value is not None:
            table.add_row(key.replace("_", " "), Text(str(value)))
    console.print(table)
    tensors = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("tensor", "shape", "dtype", "min", "max"):
        tensors.add_column(column, justify="right" if column in ("min", "max") else "left")
    for tensor in facts["tensors"]:
        shape = "(" + ", ".join(map(str, tensor["shape"])) + ("," if len(tensor["shape"]) == 1 else "") + ")"
        tensors.add_row(Text(tensor["name"]), shape, tensor["dtype"], _value(tensor["min"]), _value(tensor["max"]))
    console.print(tensors)


def render_info(console: Console, facts: dict[str, Any]) -> None:
    """`rnncli info`: each array's shape, dtype and size, and per-feature statistics."""
    for array in facts["arrays"]:
        name = facts["source"] + (f"[{array['key']}]" if array["key"] is not None else "")
        table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title="rnncli info", title_justify="left")
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        table.add_row("array", Text(f"{name} · {facts['format']}"))
        order = " (Fortran order)" if array["order"] == "F" else ""
        table.add_row("shape", f"{_shape(array['shape'])} {array['dtype']}{order} · {array['as_input']}")
        size = _bytes(array["bytes"])
        if facts["file_bytes"] is not None and len(facts["arrays"]) == 1:
            size += f" in memory · {_bytes(facts['file_bytes'])} on disk"
        table.add_row("size", size)
        stats = array["stats"]
        values = f"min {_value(stats['min'])} · mean {_value(stats['mean'])} · max {_value(stats['max'])}"
        values += f" · std {_value(stats['std'])}"
        table.add_row("values", values)
        if stats["nan"] or stats["inf"]:
            table.add_row("non-finite", Text(f"{stats['nan']:,} NaN, {stats['inf']:,} Inf", style="yellow"))
        console.print(table)
        features = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("feature", "min", "mean", "std", "max", "NaN", "Inf"):
            features.add_column(column, justify="right")
        for i, feature in enumerate(stats["features"]):
            features.add_row(
                str(i),
                *(_value(feature[k]) for k in ("min", "mean", "std", "max")),
                f"{feature['nan']:,}",
                f"{feature['inf']:,}",
            )
        if stats["features_left_out"]:
            features.add_row("…", f"{stats['features_left_out']:,} more features not listed")
        if stats["features"]:
            console.print(features)
