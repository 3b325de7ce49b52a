"""The `rnncli` command line: parses options, resolves paths and `-`, calls the core, renders.

Errors from the core are turned into one-line messages and exit codes here, in `RnnCliGroup`.
Heavy modules (numpy, rich) are imported inside commands so `rnncli --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys

from .errors import Interrupted, RnnCliError, UsageError, printable

INTERRUPTED = "interrupted; no partial output was left"


def _exit_interrupted(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM outside a command (start-up, and after it ends): nothing to undo, so say so and exit 130
    at once; a KeyboardInterrupt here would end in a traceback from whatever module was being imported."""
    try:
        os.write(2, f"rnncli: error: {INTERRUPTED}\n".encode())
    except OSError:
        pass
    os._exit(Interrupted.exit_code)


def _is_the_command() -> bool:
    """Whether this process is the `rnncli` command (its console script, or `python -m rnncli`), not a
    program that imports rnncli (which keeps its own signal handlers)."""
    program = sys.modules.get("__main__")
    spec = getattr(program, "__spec__", None)
    if spec is not None:
        return spec.name == "rnncli.__main__"
    name = os.path.basename(getattr(program, "__file__", None) or "")
    return os.path.splitext(name)[0] in ("rnncli", "rnncli-script")  # rnncli-script.py: Windows launchers


def _handle_start_up_signals() -> None:
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):  # SIGTERM last: once it is ours, both are
            signal.signal(signum, _exit_interrupted)
    except KeyboardInterrupt:  # Ctrl-C from before: signal.signal() raises it
        _exit_interrupted(signal.SIGINT, None)


# Before the imports below, which take tens of milliseconds: RnnCliGroup.invoke takes over while a
# command runs, and puts these back when it ends.
if _is_the_command():
    _handle_start_up_signals()

import errno  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from contextlib import ExitStack, suppress  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import click  # noqa: E402

from . import __version__  # noqa: E402

ACTIVATION_NAMES = ("tanh", "relu", "sigmoid", "hard_sigmoid", "linear", "softsign", "softplus", "elu")
INIT_NAMES = ("keras", "torch", "uniform", "normal", "esn")
FORMAT_NAMES = ("npy", "npz", "csv")


class RnnCliGroup(click.Group):
    """Maps rnncli's errors, interrupts and broken pipes to messages and exit codes, once for all commands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise  # plain `rnncli`: the help
        except click.UsageError as exc:  # `rnncli --bogus`: one line, like a command's bad option
            _fail(f"{exc.format_message()} (see '{ctx.command_path} --help')", exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug") or os.environ.get("RNNCLI_DEBUG") == "1"
        previous: dict[int, Any] = {}
        _SIGNALS_RECEIVED.clear()
        unraisable_hook = sys.unraisablehook
        sys.unraisablehook = lambda report: _report_unraisable(report, unraisable_hook)
        try:
            # inside the try: signal.signal() itself raises a KeyboardInterrupt that is already pending
            for signum in (signal.SIGINT, signal.SIGTERM):
                with suppress(ValueError):  # handlers can only be set in the main thread
                    previous[signum] = signal.signal(signum, _on_signal)
            result = super().invoke(ctx)
            check_interrupted()
            return result
        except RnnCliError as exc:
            if debug:
                _print_traceback()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            # Under `python -m`, CPython dies by SIGINT at exit if the interrupt landed inside a string
            # exec (dataclasses and namedtuples are built that way), even though it was handled here;
            # a string exec that completes clears that flag, so the exit code stays 130.
            exec("")
            _fail(INTERRUPTED, Interrupted.exit_code)
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except MemoryError:
            _fail(
                "out of memory: the input or model is too large for this machine; use fewer --units or split the input",
                1,
            )
        except click.UsageError as exc:  # bad options of a command: one line too, with where to look
            command = exc.ctx.command_path if exc.ctx else "rnncli"
            _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line unless --debug
            if debug:
                _print_traceback()
            _fail(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for details, and please report it)", 1
            )
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sys.unraisablehook = unraisable_hook


_SIGNALS_RECEIVED: list[int] = []  # set by the handler (always the main thread), read after each step


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: remember it, then unwind (removing temporary files) as Ctrl-C does."""
    _SIGNALS_RECEIVED.append(signum)
    raise KeyboardInterrupt


def _report_unraisable(report: Any, hook: Callable[[Any], None]) -> None:
    """Our interrupt raised inside a callback Python cannot unwind (a weakref callback during an
    import) is dropped silently: check_interrupted() raises it again. Anything else goes to `hook`."""
    if not (issubclass(report.exc_type, KeyboardInterrupt) and _SIGNALS_RECEIVED):
        hook(report)


def check_interrupted() -> None:
    """Raise the interrupt again if one arrived: Python drops a KeyboardInterrupt raised inside a callback
    ("Exception ignored in …"), and a run must not then commit its outputs and exit 0."""
    if _SIGNALS_RECEIVED:
        raise KeyboardInterrupt


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so Python's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _json_bytes(document: Any) -> bytes:
    import json

    return json.dumps(document, indent=2).encode() + b"\n"


def _fail(message: str, code: int) -> NoReturn:
    # one line whatever the message holds (file names and cells from hostile files are escaped)
    click.echo(f"rnncli: error: {printable(message, None)}", err=True)
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


class FiniteFloat(click.FloatRange):
    """A click.FloatRange that also refuses nan and ±inf (nan passes every range check), and 0 unless `zero`."""

    def __init__(self, *args: Any, zero: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._zero = zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        if number == 0 and not self._zero:
            self.fail("0 would make the model ignore its input; give a non-zero scale", param, ctx)
        return number

    def _describe_range(self) -> str:  # the [range] in --help, which click writes "x<=None" without bounds
        if self.min is None and self.max is None:
            return "" if self._zero else "x≠0"
        return super()._describe_range()


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
            type=FiniteFloat(min=0, min_open=True),
            help="Clamp the pre-activation to [-C, C] (ONNX clip).",
        ),
        click.option(
            "--leak",
            type=FiniteFloat(0, 1, min_open=True),
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
            type=FiniteFloat(min=0),
            help="Rescale W_hh to this spectral radius (reservoirs; esn default 0.9).",
        ),
        click.option(
            "--input-scaling", type=FiniteFloat(zero=False), help="Multiply random input weights and biases by S."
        ),
        click.option(
            "--density",
            type=FiniteFloat(0, 1, min_open=True),
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
            help="Load trained weights instead of drawing them: .npz/.safetensors/.pt (PyTorch nn.RNN names), "
            ".keras, .weights.h5 (Keras 3) or .onnx.",
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


return_option = click.option(
    "--return",
    "return_",
    type=click.Choice(["sequence", "final", "both"]),
    help="Every timestep's output, the final one, or both (an .npz with 'sequence' and 'final'). "
    "[default: sequence, or what a .keras model's last layer returns]",
)


@main.command()
@click.argument("input", metavar="INPUT")
@model_options
@click.option(
    "--time-major",
    is_flag=True,
    help="3-D input is (timesteps, batch, features), and so is the output. [default: batch-first, unless an .onnx "
    "graph takes time-major input (PyTorch's batch_first=False): then 3-D data are time-major]",
)
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
    help="Write the final state of every layer/direction (.npy like PyTorch's h_n; .npz for mixed sizes). May be "
    "the --initial-state file, to carry a state on from run to run.",
)
@click.option(
    "--save-weights",
    type=click.Path(dir_okay=False),
    help="Write the weights used (.npz or .safetensors, PyTorch names + settings) to repeat or ship the run.",
)
@return_option
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="Output file, written atomically; - is stdout. A device or named pipe (/dev/null, -o >(gzip > y.gz)) is "
    "written into.",
)
@click.option(
    "--to",
    "to",
    type=click.Choice(FORMAT_NAMES),
    help="Output format. [default: from -o's extension; npy on stdout or a pipe]",
)
@click.option(
    "--from",
    "from_",
    type=click.Choice(FORMAT_NAMES),
    help="Input format. [default: from the extension; sniffed on stdin]",
)
@click.option("--key", help="Which array of an .npz input to use.")
@click.option(
    "--on-nan",
    type=click.Choice(["error", "warn", "ignore"]),
    default="warn",
    show_default=True,
    help="NaN/Inf in the input or output: stop the run (exit 1, nothing written; --stream stops at the row), "
    "warn, or say nothing.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr (warnings and errors still show).")
@click.option("--show", is_flag=True, help="Draw a heatmap of the output (units × time) on stderr.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Write the summary's facts as JSON to this file (- for stdout when -o is a file).",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Live pipelines: read CSV rows one at a time and write each output row to stdout as soon as it is computed.",
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
      rnncli run data.npy --weights model.keras -o out.npy     # also .safetensors, .pt, .onnx
      tail -f sensor.csv | rnncli run - --stream --weights w.npz | consumer

    \b
    Environment:
      OMP_NUM_THREADS=N   at most N threads (default: the CPUs this process may use)
      RNNCLI_ENGINE=numpy the pure-numpy engine instead of the compiled one
    """

    from .io import as_sequences, write_array, writes_in_place
    from .pipeline import (
        RunSettings,
        build_model,
        can_stream,
        check_state_file,
        load_option_array,
        load_state,
        output_format,
        run_loaded,
        run_streamed,
        state_format,
        state_to_save,
        streamable_shape,
    )
    options = _model_options(params)
    if params.pop("stream"):
        return _run_stream(input, options, params)
    output, quiet, console = params["output"], params["quiet"], _LazyConsole()
    settings = RunSettings(
        return_mode=params["return_"] or "sequence", time_major=params["time_major"], nan_policy=params["on_nan"]
    )
    out_fmt = output_format(output, params["to"], settings.return_mode)
    if params["summary_json"] == "-" and output == "-":
        raise UsageError("--summary-json - needs stdout, but the data goes there; give -o FILE or a summary file")
    _check_outputs(
        {
            "-o": output,
            "--save-weights": params["save_weights"],
            "--save-state": params["save_state"],
            "--summary-json": params["summary_json"],
        },
        [
            ("INPUT", input),
            ("--weights", options.weights),
            ("--lengths", params["lengths"]),
            ("--initial-state", params["initial_state"]),
        ],
    )
    if params["save_weights"]:
        from .weights import save_format

        save_format(params["save_weights"])  # .npz or .safetensors: a usage error now, not after the run
    if params["save_state"]:
        state_format(params["save_state"])
    preview = output == "-" and out_fmt != "csv" and _stdout_is_terminal()

    # A 1-D/2-D .npy or a CSV file is streamed block by block (bounded memory); everything else is read whole.
    shape = streamable_shape(input, params["from_"], params["key"])
    loaded = None if shape else _read_input(input, params["from_"], params["key"], console)
    features = shape[1] if shape else as_sequences(loaded.array, loaded.source).shape[-1]
    built = build_model(options, features, source=loaded.source if loaded else input, shape=shape or loaded.array.shape)
    if params["return_"] is None and built.return_mode:  # a .keras model's own return_sequences
        settings = settings._replace(return_mode=built.return_mode)
    if built.layout == "time-major":  # an ONNX graph that takes (T, B, F): so do 3-D data and outputs
        settings = settings._replace(time_major=True)
    if params["save_state"]:
        check_state_file(built.model, params["save_state"])
    # read whole before anything is written: --save-state may be the --initial-state file (carrying the state on)
    initial_state = load_state(params["initial_state"]) if params["initial_state"] else None
    lengths = load_option_array(params["lengths"], "--lengths").reshape(-1) if params["lengths"] else None
    state_source = f"--initial-state {params['initial_state']}" if params["initial_state"] else "the initial state"
    lengths_source = f"--lengths {params['lengths']}"
    # A .npy of unknown length (from CSV) gets its header last, which needs a file, not stdout or a pipe.
    to_stream = output == "-" or writes_in_place(output)  # not a staged temporary file
    header_last = shape and shape[0] is None and to_stream and out_fmt == "npy"
    header_last = header_last and settings.return_mode != "final"
    streamed = shape and not (preview or params["show"] or lengths is not None or header_last)
    # Output files are staged and renamed into place together when this block ends: a failure or an
    # interrupt anywhere in it leaves every existing output as it was.
    with ExitStack() as staged:
        if streamed and can_stream(built.model, settings, out_fmt):
            stream_to = lambda fp: run_streamed(  # noqa: E731
                built, input, fp, settings, out_fmt, initial_state, params["from_"], state_source=state_source
            )
            run = _write(output, stream_to, staged)
        else:
            if loaded is None:
                loaded = _read_input(input, params["from_"], params["key"], console)
            run_into = lambda fp: run_loaded(  # noqa: E731
                built,
                loaded,
                settings,
                initial_state=initial_state,
                lengths=lengths,
                state_source=state_source,
                lengths_source=lengths_source,
                sink=fp,
                out_fmt=out_fmt,
                sink_is_temporary=not to_stream,
            )
            if preview:
                from .summary import render_preview

                run = run_into(None)
                for name, value in run.items.items():
                    render_preview(console, value, name)
            else:  # the output file is open before the run: an .npy sequence is computed straight into it
                run = _write(output, run_into, staged)
        facts = run.facts
        facts.output.update(destination="terminal (preview)" if preview else "stdout" if output == "-" else output)
        facts.output["format"] = out_fmt
        if params["save_weights"]:
            facts.warnings += _save_weights(built, params["save_weights"], staged)
            facts.output["also"]["weights"] = params["save_weights"]
        if params["save_state"]:
            state = state_to_save(run.state, params["save_state"])
            kind = "npz" if isinstance(state, dict) else "npy"
            _write(params["save_state"], lambda fp: write_array(fp, state, kind), staged)
            facts.output["also"]["state"] = params["save_state"]
        document = _json_bytes(facts.as_dict()) if params["summary_json"] else b""
        if params["summary_json"] not in (None, "-"):
            _write(params["summary_json"], lambda fp: fp.write(document), staged)
        check_interrupted()  # before the staged outputs are renamed into place
    if params["summary_json"] == "-":  # stdout once the files are in place (a closed pipe cannot undo them)
        _write("-", lambda fp: fp.write(document))

    if facts.warnings:
        from .summary import render_warnings

        render_warnings(console, facts.warnings)
    if not quiet:
        from .summary import render_summary

        render_summary(console, facts.as_dict())
    if params["show"]:
        from .summary import render_heatmap

        sequence = run.sequence
        shown = sequence if sequence.ndim == 2 else sequence[:, 0] if settings.time_major else sequence[0]
        render_heatmap(console, shown, "" if sequence.ndim == 2 else " (first batch row)")


WEIGHT_SETTINGS_HELP = "For files that do not record it (PyTorch state_dicts, .weights.h5); files that do must agree."


def _weights_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options for what a weights file may not record, shared by `weights inspect` and `weights convert`."""
    options = [
        click.option("--activation", type=click.Choice(ACTIVATION_NAMES), help=f"Activation. {WEIGHT_SETTINGS_HELP}"),
        click.option(
            "--merge", type=click.Choice(["concat", "sum", "mul", "ave"]), help="How bidirectional layers merge."
        ),
        click.option("--reverse", is_flag=True, default=None, help="One direction, backwards in time."),
        click.option("--clip", type=FiniteFloat(min=0, min_open=True), help="Clamp pre-activations to [-C, C]."),
        click.option("--leak", type=FiniteFloat(0, 1, min_open=True), help="Leaky integration rate."),
        click.option(
            "--input-size",
            type=click.IntRange(min=1),
            help="Input features, to order the layers of a .weights.h5 that mixes SimpleRNN and Bidirectional.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _open_weights(path: str, params: dict[str, Any]) -> Any:
    from .model import SETTINGS
    from .weights import open_weights

    settings = {name: params.pop(name) for name in SETTINGS}
    return open_weights(path, settings=settings, input_size=params.pop("input_size"))


@main.group()
def weights() -> None:
    """Look inside weight files and convert them between formats.

    Reads PyTorch nn.RNN state_dicts (.npz, .safetensors, and .pt when torch is installed), Keras 3
    models (.keras, .weights.h5) and ONNX models (.onnx); writes all of them but .pt.

    \b
    Examples:
      rnncli weights inspect model.keras
      rnncli weights convert model.keras model.onnx
    """


@weights.command("inspect")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@_weights_settings
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON on stdout instead of tables.")
def weights_inspect(file: str, as_json: bool, **params: Any) -> None:
    """Show what weights FILE holds: the model rnncli runs from it and every tensor.

    The tables (stdout) give the layers, units, activation, directions, parameter count, which
    settings the file records, the model's own output choice, and each tensor's name, shape,
    dtype, min and max.

    \b
    Examples:
      rnncli weights inspect model.keras
      rnncli weights inspect rnn.pt --activation relu
      rnncli weights inspect model.onnx --json | python -m json.tool
    """
    from .weights import describe

    facts = describe(_open_weights(file, params))
    if as_json:
        document = _json_bytes(facts)
        _write("-", lambda fp: fp.write(document))
        return
    from .summary import render_weights, text_console

    render_weights(text_console(stderr=False), facts)


@weights.command("convert")
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("target", metavar="OUT", type=click.Path(dir_okay=False))
@_weights_settings
@click.option(
    "--to", "to", type=click.Choice(["npz", "safetensors", "keras", "weights.h5", "onnx"]), help="Format of OUT."
)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), help="Cast the weights. [default: as in IN]")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr (notes on the target still show).")
def weights_convert(source: str, target: str, to: str | None, dtype: str | None, quiet: bool, **params: Any) -> None:
    """Convert weights IN to OUT: .npz, .safetensors, .keras, .weights.h5 or .onnx (from any of those or .pt).

    OUT loads back to the same model: `rnncli run --weights OUT` gives the outputs that
    `--weights IN` gives, and an exported .onnx runs in onnxruntime with them (input x
    (batch, time, features); outputs y, the sequence, and final). A target that cannot express
    the model is refused (Keras has no clip or leak, ONNX no leak); settings a target does not
    record are named on stderr.

    \b
    Examples:
      rnncli weights convert model.keras rnn.safetensors
      rnncli weights convert rnn.pt rnn.onnx --activation relu
      rnncli weights convert w.npz model.keras
    """
    from .summary import render_warnings, stderr_console
    from .weights import WRITE_FORMATS, weights_format, write_weights

    fmt = to or weights_format(target)
    if fmt not in WRITE_FORMATS:
        raise UsageError(
            f"cannot tell a weights format rnncli writes from OUT {target}; name it .npz, .safetensors, .keras, "
            ".weights.h5 or .onnx, or give --to"
        )
    _check_outputs({"OUT": target}, [("IN", source)])
    loaded = _open_weights(source, params)
    model = loaded.model.astype(dtype) if dtype else loaded.model
    own = {"return_mode": loaded.return_mode, "layout": loaded.layout, "initial_state": loaded.initial_state}
    notes = _write(target, lambda fp: write_weights(model, fp, fmt, **own, name=target))
    console = stderr_console()
    render_warnings(console, loaded.warnings + notes)
    if not quiet:
        from rich.text import Text

        units = ",".join(map(str, model.units))
        console.print(
            Text(
                f"{source} ({loaded.fmt}) → {target} ({fmt}): {len(model.layers)} layers × {units} units, "
                f"{model.parameter_count:,} parameters, {model.dtype}"
            )
        )


@main.command()
@click.argument("data", metavar="DATA")
@click.option("--from", "from_", type=click.Choice(FORMAT_NAMES), help="Input format. [default: from the extension]")
@click.option("--key", help="Only this array of an .npz (default: every array).")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON on stdout instead of tables.")
def info(data: str, from_: str | None, key: str | None, as_json: bool) -> None:
    """Show the shape, dtype, size and statistics of DATA (.npy/.npz/CSV, or - for stdin).

    .npy files and .npz arrays are read block by block, never whole, so files larger than memory
    are fine. Statistics are per feature (the last axis): min, mean, standard deviation and max
    of the finite values, and NaN/Inf counts.

    \b
    Examples:
      rnncli info sample_data/sines.npy
      rnncli info recordings.npz --key session_3 --json
      cat sample_data/sines.csv | rnncli info -
    """
    from .info import describe_data

    if data == "-":
        _stdin_hint(_LazyConsole(), "data", "a .npy stream or CSV rows")
        facts = describe_data(sys.stdin.buffer, from_, key=key, name="<stdin>")
    else:
        facts = describe_data(data, from_, key=key)
    if as_json:
        document = _json_bytes(facts)
        _write("-", lambda fp: fp.write(document))
        return
    from .summary import render_info, text_console

    render_info(text_console(stderr=False), facts)


def _run_stream(source: str, options: Any, params: dict[str, Any]) -> None:
    """`run --stream`: rows in, rows out, one at a time (stream.py does the work)."""
    from .io import open_input, write_array
    from .pipeline import check_state_file, load_state, starting_state, state_format, state_to_save
    from .stream import open_stream, stream_rows
    from .summary import render_warnings, stderr_console

    refused = {
        "-o FILE": params["output"] != "-",
        f"--to {params['to']}": params["to"] not in (None, "csv"),
        f"--from {params['from_']}": params["from_"] not in (None, "csv"),
        "--return both": params["return_"] == "both",
        "--time-major": params["time_major"],
        "--lengths": params["lengths"],
        "--key": params["key"],
        "--show": params["show"],
        "--summary-json": params["summary_json"],
    }
    if any(refused.values()):
        given = ", ".join(flag for flag, on in refused.items() if on)
        raise UsageError(f"--stream writes CSV rows to stdout as they come, so {given} cannot apply; redirect stdout")
    _check_outputs(
        {"--save-weights": params["save_weights"], "--save-state": params["save_state"]},
        [("INPUT", source), ("--weights", options.weights), ("--initial-state", params["initial_state"])],
    )
    if params["save_weights"]:
        from .weights import save_format

        save_format(params["save_weights"])
    if params["save_state"]:
        state_format(params["save_state"])
    console, name = stderr_console(), "<stdin>" if source == "-" else source
    initial_state = load_state(params["initial_state"]) if params["initial_state"] else None  # before waiting for rows
    with ExitStack() as stack:
        lines = sys.stdin.buffer if source == "-" else stack.enter_context(open_input(source))
        if source == "-":
            _stdin_hint(console, "CSV rows")
        built, rows = open_stream(options, lines, name)
        if params["save_state"]:
            check_state_file(built.model, params["save_state"])
        notes = _save_weights(built, params["save_weights"]) if params["save_weights"] else []
        given = f"--initial-state {params['initial_state']}"
        initial_state, _ = starting_state(built, initial_state, given, None, name)
        render_warnings(console, [*built.warnings, *notes])
        facts = stream_rows(
            built.model,
            rows,
            _StdoutWriter(sys.stdout.buffer),
            initial_state,
            name=name,
            nan_policy=params["on_nan"],
            warn=lambda message: render_warnings(console, [message]),
        )
    if params["save_state"]:
        state = state_to_save(facts.last.state, params["save_state"])
        _write(params["save_state"], lambda fp: write_array(fp, state, "npz" if isinstance(state, dict) else "npy"))
    if not params["quiet"]:
        console.print(
            f"rnncli run --stream: {facts.rows:,} rows · {facts.seconds / facts.rows * 1e6:,.0f} µs per row "
            f"in the model · {built.origin} · {built.model.output_size} outputs per row"
        )


@main.command()
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the outputs, one OUT_DIR/<stem>.<ext> per input (created if missing).",
)
@click.option(
    "--from-list",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Also read input paths from FILE, one per line (- for stdin, as from find).",
)
@model_options
@click.option("--time-major", is_flag=True, help="3-D inputs are (timesteps, batch, features), and so are outputs.")
@return_option
@click.option("--to", "to", type=click.Choice(FORMAT_NAMES), help="Output format [default: npy; npz for --return both]")
@click.option(
    "--from", "from_", type=click.Choice(FORMAT_NAMES), help="Input format of every file. [default: from the extension]"
)
@click.option("--key", help="Which array of .npz inputs to use.")
@click.option(
    "--on-nan",
    type=click.Choice(["error", "warn", "ignore"]),
    default="warn",
    show_default=True,
    help="NaN/Inf in a file's input or output: fail that file, warn (in the report), or say nothing.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel worker processes. [default: the cores available]")
@click.option(
    "--dask", "dask_address", metavar="ADDRESS", help="Run on the Dask cluster at ADDRESS (needs rnncli[dask])."
)
@click.option(
    "--shard", metavar="K/N", help="Only shard K of N (K counts from 1), for job arrays; N shards cover every input."
)
@click.option("--overwrite", is_flag=True, help="Redo inputs whose outputs exist (by default a rerun skips them).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write one JSON record per file here (- for stdout).")
@click.option(
    "--save-weights", type=click.Path(dir_okay=False), help="Write the weights used (.npz) to repeat or ship the batch."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr (failures still show).")
def batch(inputs: tuple[str, ...], **params: Any) -> None:
    """Run one RNN over many files: paths, quoted globs ('data/**/*.npy'), or --from-list.

    The model is built once (random weights take the feature count from the first readable input)
    and every input becomes OUT_DIR/<stem>.<ext>. Outputs are written atomically, so existing ones
    are complete and a rerun skips them. A bad file is named and skipped; the exit code is 1 if
    any file failed, 130 if interrupted.

    \b
    Examples:
      rnncli batch 'recordings/**/*.npy' --out-dir states --units 64 --report report.json
      find data -name '*.csv' | rnncli batch --from-list - --out-dir out --weights w.npz
      rnncli batch 'data/*.npy' --out-dir out --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT
      rnncli batch 'data/*.npy' --out-dir out --weights w.npz --dask tcp://scheduler:8786
    """
    from .batch import (
        BatchSettings,
        batch_report,
        check_own_outputs,
        expand_inputs,
        parse_shard,
        plan_batch,
        prepare_batch,
        run_batch,
    )
    from .errors import OutputError
    from .model import usable_cpus
    from .pipeline import RunSettings, output_format
    from .summary import stderr_console

    options = _model_options(params)
    console, quiet, out_dir = stderr_console(), params["quiet"], params["out_dir"]
    if params["dask_address"] and params["workers"]:
        raise UsageError("--workers sets local processes; a Dask cluster has its own workers, so drop one of them")
    shard = parse_shard(params["shard"]) if params["shard"] else None
    run_settings = RunSettings(params["return_"], time_major=params["time_major"], nan_policy=params["on_nan"])
    out_fmt = output_format("-", params["to"], run_settings.return_mode)
    settings = BatchSettings(run_settings, out_fmt, in_fmt=params["from_"], key=params["key"])
    if not inputs and not params["from_list"]:
        raise UsageError("no inputs: give paths, quoted glob patterns such as 'data/**/*.npy', or --from-list FILE")
    if params["save_weights"]:
        from .weights import save_format

        save_format(params["save_weights"])  # .npz or .safetensors: a usage error now, not after the batch
    paths = expand_inputs(inputs, _read_list(params["from_list"], console) if params["from_list"] else [])
    check_own_outputs(inputs, out_dir, out_fmt)
    plan = plan_batch(paths, out_dir, out_fmt, shard=shard, overwrite=params["overwrite"])
    _check_outputs(
        {"--report": params["report"], "--save-weights": params["save_weights"]},
        [("--weights", options.weights), *(("INPUT", path) for path in plan.inputs)],
        planned=[job.destination for job in plan.todo + plan.done],  # done: one an input would pass for done
    )
    # everything that fails the whole batch (weights, contradicting options, the dask extra) before any display
    prepared = prepare_batch(options, plan.inputs, settings, params["dask_address"])
    if not quiet:
        _describe_plan(console, plan, out_dir)
    if plan.todo:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"--out-dir {out_dir}: cannot create it ({exc.strerror})") from None
    with _BatchProgress(console, len(plan.todo), quiet) as progress:
        result = run_batch(
            plan.todo,
            prepared,
            workers=params["workers"] or usable_cpus(),
            dask_address=params["dask_address"],
            on_record=progress.update,
        )
    report = batch_report(plan, result, out_dir)
    if params["report"]:
        document = _json_bytes(report)
        _write(params["report"], lambda fp: fp.write(document))
    if params["save_weights"] and result.built is not None:
        from .summary import render_warnings

        render_warnings(console, _save_weights(result.built, params["save_weights"]))
    if not quiet:
        _render_batch_summary(console, report)
    counts = report["counts"]
    if counts["interrupted"]:
        raise Interrupted(
            f"interrupted with {counts['interrupted']} of {counts['files']} files not done; no partial output was "
            "left, and the same command resumes"
        )
    if counts["failed"]:
        failed = [record["input"] for record in report["files"] if record["status"] == "failed"]
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise RnnCliError(f"{len(failed)} of {counts['files']} files failed ({shown}); the others were written")


def _read_list(path: str, console: Any) -> list[str]:
    """The paths of a --from-list file or stdin, one per line (bytes decoded as the filesystem does)."""
    from .errors import InputError

    if path == "-":
        _stdin_hint(console, "paths", "one per line")
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as fp:
                data = fp.read()
        except OSError as exc:
            raise InputError(f"--from-list {path}: cannot read it ({exc.strerror})") from None
    return [os.fsdecode(line) for line in data.splitlines()]


def _describe_plan(console: Any, plan: Any, out_dir: str) -> None:
    from rich.text import Text

    if plan.left_out:
        console.print(Text(f"leaving out {len(plan.left_out)} inputs lying in --out-dir {out_dir} (earlier outputs)"))
    if plan.shard:
        kept = len(plan.todo) + len(plan.done)
        console.print(Text(f"shard {plan.shard}: {kept} of {len(plan.inputs)} inputs"))
    if plan.done:
        console.print(
            Text(f"skipping {len(plan.done)} inputs whose outputs exist in {out_dir} (--overwrite redoes them)")
        )


class _BatchProgress:
    """Files done/total, timesteps/s and ETA on stderr (hidden with -q); failed files are named as they fail."""

    def __init__(self, console: Any, total: int, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._console, self._timesteps = console, 0
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self._task = self._progress.add_task("files", total=total, rate="")

    def __enter__(self) -> _BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, record: Any) -> None:
        from rich.text import Text

        if record.status == "interrupted":
            return
        if record.status == "failed":
            self._console.print(Text("failed: ", style="bold red") + Text(record.error))
        self._timesteps += record.timesteps or 0
        rate = self._timesteps / max(self._progress.tasks[0].elapsed or 0, 1e-9)
        self._progress.update(self._task, advance=1, rate=f"{rate:,.0f} timesteps/s")


def _render_batch_summary(console: Any, report: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    counts, model, seconds = report["counts"], report["model"], report["seconds"]
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title="rnncli batch", title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    done = [f"{counts['ok']} written", f"{counts['skipped']} skipped (done before)", f"{counts['failed']} failed"]
    if counts["interrupted"]:
        done.append(f"{counts['interrupted']} interrupted")
    shard = f" (shard {report['shard']})" if report["shard"] else ""
    table.add_row("files", f"{counts['files']}{shard}: " + ", ".join(done))
    if model is not None:
        units = ",".join(map(str, model["units"]))
        layers = f"{model['layers']} layer{'s' if model['layers'] > 1 else ''}"
        features = f"{model['input_size']} features (from {report['features_from']})"
        table.add_row("model", f"{layers} × {units} units · {features} · {model['activation']} · {model['origin']}")
    rate = report["timesteps"] / seconds if seconds else 0
    table.add_row("time", f"{seconds:.3g} s · {rate:,.0f} timesteps/s ({report['timesteps']:,} steps)")
    table.add_row("outputs", Text(report["out_dir"]))
    failed = [record for record in report["files"] if record["status"] == "failed"]
    for record in failed[:10]:
        table.add_row("failed", Text(record["error"]))
    if len(failed) > 10:
        table.add_row("failed", f"… and {len(failed) - 10} more (--report FILE lists them all)")
    warned = sum(bool(record["warnings"]) for record in report["files"])
    if warned:
        table.add_row("warnings", f"{warned} files (NaN/Inf or saturation; --report FILE has them)")
    console.print(table)


class _LazyConsole:
    """The stderr console, made (and rich imported) only when something is shown: quiet runs start faster."""

    def __init__(self) -> None:
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from .summary import stderr_console

            self._console = stderr_console()
        return getattr(self._console, name)


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _stdin_hint(console: Any, what: str, detail: str = "") -> None:
    """Tell a person at a terminal that rnncli waits for them, instead of seeming to hang (also with -q:
    the hint shows only when stdin is a terminal, so it never touches a pipeline). First, an interrupt
    Python dropped during the imports before it stops the command, rather than a wait for input."""
    check_interrupted()
    if sys.stdin.isatty():
        console.print(f"[dim]waiting for {what} on stdin ({detail + '; ' if detail else ''}Ctrl-D to end)…[/dim]")


def _read_input(source: str, fmt: str | None, key: str | None, console: Any) -> Any:
    from .io import load_array

    if source != "-":
        return load_array(source, fmt, key=key)
    _stdin_hint(console, "data", "a .npy stream or CSV rows")
    return load_array(sys.stdin.buffer, fmt, key=key, name="<stdin>")


class _StdoutWriter:
    """stdout as a plain writable: numpy then writes through Python, so a closed pipe raises BrokenPipeError;
    any other failed write (a full disk, `ulimit -f`, an I/O error) raises OutputError."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, data: bytes) -> int:
        # A pipe closed in the middle of a large write gives a short count, not an error (and numpy
        # ignores the count): write the rest, so the closed pipe raises BrokenPipeError every time.
        view = memoryview(data).cast("B")
        written = 0
        try:
            while written < len(view):
                count = self._raw.write(view[written:])
                if not count:
                    raise BrokenPipeError(errno.EPIPE, "stdout accepts no more data")
                written += count
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _stdout_failed(exc) from None
        return written

    def flush(self) -> None:
        try:
            self._raw.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _stdout_failed(exc) from None


def _stdout_failed(exc: OSError) -> RnnCliError:
    from .errors import OutputError

    return OutputError(f"<stdout>: write failed ({exc.strerror or exc}); the output is incomplete")


def _write(path: str, produce: Callable[[Any], Any], staged: ExitStack | None = None) -> Any:
    """Write to stdout (`-`) or atomically to a file; returns what `produce` returns.

    With `staged`, the file is complete and synced on return but renamed into place only when
    that stack closes without an error, together with the other staged outputs.
    """
    from .io import atomic_output, sync_output

    if path == "-":
        stdout = _StdoutWriter(sys.stdout.buffer)
        result = produce(stdout)
        stdout.flush()
        return result
    if staged is None:
        with atomic_output(path) as fp:
            return produce(fp)
    fp = staged.enter_context(atomic_output(path))
    result = produce(fp)
    sync_output(fp)  # a full disk shows here (a pipe has nothing to sync), before any staged output is renamed
    return result


def _save_weights(built: Any, target: str, staged: ExitStack | None = None) -> list[str]:
    """--save-weights: the model as .npz or .safetensors, with what its weights file said besides the
    tensors (output choice, input layout); returns notes on what the file does not keep (an initial state)."""
    from .weights import save_format, write_weights

    fmt = save_format(target)
    own = {"return_mode": built.return_mode, "layout": built.layout, "initial_state": built.initial_state}
    return _write(target, lambda fp: write_weights(built.model, fp, fmt, **own, name=target), staged)


def _check_outputs(
    outputs: dict[str, str | None], inputs: Iterable[tuple[str, str | None]] = (), planned: Iterable[str] = ()
) -> None:
    """Before any work: every output file can be written, no two outputs share a file, and none is a file
    the command reads (compared as files, so links count) — but --save-state may be its --initial-state,
    which is read whole before anything is written.

    `inputs` are (flag, path), flag INPUT for data; `planned` are batch outputs in --out-dir (made later).
    """
    from .io import check_output_path

    given = [(flag, path, os.path.realpath(path)) for flag, path in outputs.items() if path and path != "-"]
    for _, path, _ in given:
        check_output_path(path)
    directories = {directory: os.path.realpath(directory) for directory in {os.path.dirname(p) for p in planned}}
    for path in planned:  # all in --out-dir: resolved once, not file by file (a batch may have thousands)
        given.append(("--out-dir", path, os.path.join(directories[os.path.dirname(path)], os.path.basename(path))))
    seen: dict[str, str] = {}
    existing: dict[tuple[int, int], tuple[str, str]] = {}
    for flag, path, real in given:
        identity = _file_identity(path)
        if real in seen or identity in existing:
            first = seen.get(real) or existing[identity][0]
            raise UsageError(f"{first} and {flag} both write {path}; give each output its own file")
        seen[real] = flag
        if identity is not None:
            existing[identity] = (flag, path)
    if not existing:  # an input is an existing file: no need to look at them (a batch may have thousands)
        return
    for source, path in inputs:
        written = existing.get(_file_identity(path)) if path and path != "-" else None
        if written is not None and (written[0], source) != ("--save-state", "--initial-state"):
            what = "the input" if source == "INPUT" else f"the {source} file"
            raise UsageError(f"{written[0]} {written[1]} is also {what}; write the output to another file")


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of an existing file, as os.path.samefile compares them (symlinks followed), else None."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino
