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


def stderr_console() -> Console:
    """The one console people's text goes to."""
    return Console(stderr=True, highlight=False)


def _shape(shape: Any) -> str:
    return str(tuple(int(n) for n in shape))


def _units(model: dict[str, Any]) -> str:
    units = model["units"]
    sizes = str(units[0]) if len(set(units)) == 1 else ",".join(map(str, units))
    layers = model["layers"]
    text = f"{layers} layer{'s' if layers > 1 else ''} × {sizes} units"
    if model["directions"] == 2:
        text += f", bidirectional ({model['merge']})"
    elif model["reverse"]:
        text += ", reversed in time"
    return text


def render_summary(console: Console, facts: dict[str, Any]) -> None:
    """The run summary: input, model, output, time, value statistics."""
    inp, model, out, timing = facts["input"], facts["model"], facts["output"], facts["timing"]
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title="rnncli run", title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    source = inp["source"] + (f"[{inp['key']}]" if inp.get("key") else "")
    table.add_row("input", f"{source} · {inp['format']} · {_shape(inp['shape'])} {inp['dtype']}")
    extras = [model["activation"]]
    if not model["bias"]:
        extras.append("no bias")
    if model["clip"] is not None:
        extras.append(f"clip {model['clip']:g}")
    if model["leak"] != 1:
        extras.append(f"leak {model['leak']:g}")
    table.add_row(
        "model",
        f"{_units(model)} · {', '.join(extras)} · {model['parameters']:,} parameters · {model['dtype']}",
    )
    table.add_row("weights", f"{model['origin']} · {model['engine']} engine")
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
    console.print(table)


def render_warnings(console: Console, warnings: list[str]) -> None:
    for message in warnings:
        console.print(Text("warning: ", style="bold yellow") + Text(message))


def render_preview(console: Console, array: np.ndarray, name: str) -> None:
    """A short look at an array instead of binary on a terminal, with how to save it."""
    with np.printoptions(precision=4, threshold=60, edgeitems=3, suppress=True, linewidth=console.width):
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
    width = max(10, console.width - 8)
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
