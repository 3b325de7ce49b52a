"""The `rnncli` command line: parses options, resolves paths and `-`, calls the core, renders.

Errors from the core are turned into one-line messages and exit codes here, in `RnnCliGroup`.
Heavy modules (numpy, rich) are imported inside commands so `rnncli --help` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import Interrupted, RnnCliError, UsageError

ACTIVATION_NAMES = ("tanh", "relu", "sigmoid", "hard_sigmoid", "linear", "softsign", "softplus", "elu")
INIT_NAMES = ("keras", "torch", "uniform", "normal", "esn")
FORMAT_NAMES = ("npy", "npz", "csv")


class RnnCliGroup(click.Group):
    """Maps rnncli's errors, interrupts and broken pipes to messages and exit codes, once for all commands."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug") or os.environ.get("RNNCLI_DEBUG") == "1"
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return super().invoke(ctx)
        except RnnCliError as exc:
            if debug:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail(str(Interrupted("interrupted; no partial output was left")), Interrupted.exit_code)
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except MemoryError:
            _fail(
                "out of memory: the input or model is too large for this machine; use fewer --units or split the input",
                1,
            )
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line unless --debug
            if debug:
                traceback.print_exc()
            _fail(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for details, and please report it)", 1
            )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so Python's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(message: str, code: int) -> None:
    click.echo(f"rnncli: error: {message}", err=True)
    raise click.exceptions.Exit(code)


@click.group(cls=RnnCliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnncli")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (also RNNCLI_DEBUG=1).")
def main(debug: bool) -> None:
    """Run recurrent neural networks over sequence data from the shell.

    Reads (timesteps, features) or (batch, timesteps, features) arrays from .npy, .npz,
    CSV/TSV or stdin, runs a simple RNN h_t = tanh(W x_t + U h_{t-1} + b) and writes the
    output sequence or final state. Data goes to stdout, summaries to stderr.

    Example:  rnncli run sample_data/sines.npy --units 64 -o states.npy
    """


class UnitsType(click.ParamType):
    name = "N[,N…]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"'{value}' is not a size or a comma list of sizes such as 64 or 64,32", param, ctx)
        if any(size < 1 for size in sizes):
            self.fail(f"units must be positive, got {value}", param, ctx)
        return sizes


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define the model, shared by `run` and `batch`."""
    options = [
        click.option(
            "--units",
            type=UnitsType(),
            help="Units per layer: one size, or a comma list per layer (64,32). [default: 64]",
        ),
        click.option(
            "--layers", type=click.IntRange(min=1), help="Number of stacked layers. [default: one per --units size]"
        ),
        click.option("--bidirectional", is_flag=True, default=None, help="Run every layer forwards and backwards."),
        click.option(
            "--merge",
            type=click.Choice(["concat", "sum", "mul", "ave"]),
            help="How bidirectional outputs combine. [default: concat]",
        ),
        click.option(
            "--reverse",
            is_flag=True,
            default=None,
            help="One direction, backwards in time (outputs aligned to input time).",
        ),
        click.option("--activation", type=click.Choice(ACTIVATION_NAMES), help="Activation function. [default: tanh]"),
        click.option("--no-bias", "no_bias", is_flag=True, default=None, help="No bias terms."),
        click.option(
            "--clip",
            type=click.FloatRange(min=0, min_open=True),
            help="Clamp the pre-activation to [-C, C] (ONNX clip).",
        ),
        click.option(
            "--leak",
            type=click.FloatRange(0, 1, min_open=True),
            help="Leaky integration rate A: h = (1-A) h + A f(…). [default: 1]",
        ),
        click.option(
            "--init",
            type=click.Choice(INIT_NAMES),
            help="Random weight scheme: keras (default), torch, uniform (seed notebook), normal, esn.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            help="Seed for random weights; same seed, same weights on any machine. [default: 0]",
        ),
        click.option(
            "--spectral-radius",
            type=click.FloatRange(min=0),
            help="Rescale W_hh to this spectral radius (reservoirs; esn default 0.9).",
        ),
        click.option("--input-scaling", type=float, help="Multiply random input weights and biases by S."),
        click.option(
            "--density",
            type=click.FloatRange(0, 1, min_open=True),
            help="Share of non-zero recurrent weights (esn default 0.1).",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["float32", "float64"]),
            help="Computation dtype. [default: float32, or the weights file's]",
        ),
        click.option(
            "--weights",
            type=click.Path(dir_okay=False),
            help="Load weights (.npz with PyTorch nn.RNN state_dict names) instead of drawing them.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _model_options(params: dict[str, Any]) -> Any:
    from .pipeline import ModelOptions

    no_bias = params.pop("no_bias")
    return ModelOptions(
        bias=None if no_bias is None else not no_bias,
        **{
            name: params.pop(name)
            for name in (
                "units",
                "layers",
                "bidirectional",
                "merge",
                "reverse",
                "activation",
                "clip",
                "leak",
                "init",
                "seed",
                "spectral_radius",
                "input_scaling",
                "density",
                "dtype",
                "weights",
            )
        },
    )


@main.command()
@click.argument("input", metavar="INPUT")
@model_options
@click.option("--time-major", is_flag=True, help="3-D input is (timesteps, batch, features), and so is the output.")
@click.option(
    "--lengths",
    type=click.Path(dir_okay=False),
    help="File of valid timesteps per batch row (variable-length sequences).",
)
@click.option(
    "--initial-state",
    type=click.Path(dir_okay=False),
    help="Start from this state: (layers*directions, [batch,] units) .npy, or an .npz from --save-state.",
)
@click.option(
    "--save-state",
    type=click.Path(dir_okay=False),
    help="Write the final state of every layer/direction (.npy like PyTorch's h_n; .npz for mixed sizes).",
)
@click.option(
    "--save-weights",
    type=click.Path(dir_okay=False),
    help="Write the weights used (.npz, PyTorch names) to repeat or ship the run.",
)
@click.option(
    "--return",
    "return_",
    type=click.Choice(["sequence", "final", "both"]),
    default="sequence",
    show_default=True,
    help="Every timestep's output, the final one, or both (an .npz with 'sequence' and 'final').",
)
@click.option("-o", "--output", default="-", show_default=True, help="Output file; - is stdout.")
@click.option(
    "--to", "to", type=click.Choice(FORMAT_NAMES), help="Output format. [default: from -o's extension; npy on stdout]"
)
@click.option(
    "--from",
    "from_",
    type=click.Choice(FORMAT_NAMES),
    help="Input format. [default: from the extension; sniffed on stdin]",
)
@click.option("--key", help="Which array of an .npz input to use.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr (warnings and errors still show).")
@click.option("--show", is_flag=True, help="Draw a heatmap of the output (units × time) on stderr.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Write the summary's facts as JSON to this file (- for stdout when -o is a file).",
)
def run(input: str, **params: Any) -> None:
    """Run an RNN over INPUT (a .npy/.npz/CSV file, or - for stdin).

    INPUT is (timesteps, features), (batch, timesteps, features), or a 1-D series. Weights are
    random and seeded (Keras defaults unless --init says otherwise) or loaded with --weights.

    \b
    Examples:
      rnncli run sample_data/sines.npy --units 64 -o states.npy
      cat sample_data/sines.csv | rnncli run - --units 32 --return final --to csv
      rnncli run data.npy --init uniform --seed 7 --save-weights w.npz -o out.npy
      rnncli run more.npy --weights w.npz --show -o out.npy
    """

    from .io import as_sequences, write_array
    from .pipeline import (
        RunSettings,
        build_model,
        can_stream,
        check_state_file,
        load_state,
        output_data,
        output_format,
        run_loaded,
        run_streamed,
        state_to_save,
        streamable_shape,
    )
    from .summary import render_heatmap, render_preview, render_summary, render_warnings, stderr_console

    options = _model_options(params)
    output, quiet, console = params["output"], params["quiet"], stderr_console()
    settings = RunSettings(return_mode=params["return_"], time_major=params["time_major"])
    out_fmt = output_format(output, params["to"], settings.return_mode)
    if params["summary_json"] == "-" and output == "-":
        raise UsageError("--summary-json - needs stdout, but the data goes there; give -o FILE or a summary file")
    preview = output == "-" and out_fmt != "csv" and _stdout_is_terminal()

    # A long 1-D/2-D .npy is streamed block by block (bounded memory); everything else is read whole.
    shape = streamable_shape(input, params["from_"], params["key"])
    loaded = None if shape else _read_input(input, params["from_"], params["key"], console, quiet)
    built = build_model(options, shape[1] if shape else as_sequences(loaded.array, loaded.source).shape[-1])
    if params["save_state"]:
        check_state_file(built.model, params["save_state"])
    initial_state = load_state(params["initial_state"]) if params["initial_state"] else None
    lengths = _read_array(params["lengths"]).reshape(-1) if params["lengths"] else None
    streamed = shape and not (preview or params["show"] or lengths is not None)
    if streamed and can_stream(built.model, settings, out_fmt):
        run = _write(output, lambda fp: run_streamed(built, input, fp, settings, out_fmt, initial_state))
    else:
        if loaded is None:
            loaded = _read_input(input, params["from_"], params["key"], console, quiet)
        run = run_loaded(built, loaded, settings, initial_state=initial_state, lengths=lengths)
        if preview:
            for name, value in run.items.items():
                render_preview(console, value, name)
        else:
            _write(output, lambda fp: write_array(fp, output_data(run.items, out_fmt), out_fmt))
    facts = run.facts
    facts.output.update(destination="terminal (preview)" if preview else "stdout" if output == "-" else output)
    facts.output["format"] = out_fmt
    if params["save_weights"]:
        from .weights import save_weights

        _write(params["save_weights"], lambda fp: save_weights(built.model, fp))
        facts.output["also"]["weights"] = params["save_weights"]
    if params["save_state"]:
        state = state_to_save(run.state, params["save_state"])
        _write(params["save_state"], lambda fp: write_array(fp, state, "npz" if isinstance(state, dict) else "npy"))
        facts.output["also"]["state"] = params["save_state"]
    if params["summary_json"]:
        document = json.dumps(facts.as_dict(), indent=2).encode() + b"\n"
        _write(params["summary_json"], lambda fp: fp.write(document))

    render_warnings(console, facts.warnings)
    if not quiet:
        render_summary(console, facts.as_dict())
    if params["show"]:
        sequence = run.sequence
        shown = sequence if sequence.ndim == 2 else sequence[:, 0] if settings.time_major else sequence[0]
        render_heatmap(console, shown, "" if sequence.ndim == 2 else " (first batch row)")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _read_input(source: str, fmt: str | None, key: str | None, console: Any, quiet: bool) -> Any:
    from .io import load_array

    if source != "-":
        return load_array(source, fmt, key=key)
    if sys.stdin.isatty() and not quiet:
        console.print("[dim]waiting for data on stdin (a .npy stream or CSV rows; Ctrl-D to end)…[/dim]")
    return load_array(sys.stdin.buffer, fmt, key=key, name="<stdin>")


def _read_array(path: str) -> Any:
    from .io import load_array

    return load_array(path).array


class _StdoutWriter:
    """stdout as a plain writable: numpy then writes through Python, so a closed pipe raises BrokenPipeError."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, data: bytes) -> int:
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def _write(path: str, produce: Callable[[Any], Any]) -> Any:
    """Write to stdout (`-`) or atomically to a file; returns what `produce` returns."""
    from .io import atomic_output

    if path == "-":
        result = produce(_StdoutWriter(sys.stdout.buffer))
        sys.stdout.buffer.flush()
        return result
    with atomic_output(path) as fp:
        return produce(fp)
