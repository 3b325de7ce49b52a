"""Many files with one model: input expansion, output naming, sharding, resume, and parallel runs.

The core of `rnncli batch`. Inputs (paths, glob patterns with `**`, listed paths) are expanded,
sorted and de-duplicated; each maps to `OUT_DIR/<stem>.<ext>`, and colliding names are refused
before any work starts. A shard `K/N` keeps the inputs whose path hashes to K, so job-array
tasks split a batch without talking to each other. Outputs are written atomically, so an output
that exists is complete: a rerun skips it. Files run in this process, in a local process pool,
or on a Dask cluster; each yields one :class:`FileRecord`. Nothing here prints or exits.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import InputError, MissingExtraError, RnnCliError, UsageError
from .model import THREAD_VARIABLES
from .pipeline import (
    BuiltModel,
    ModelOptions,
    RunSettings,
    build_model,
    describe_model,
    run_to_file,
    weights_settings,
)

EXTENSIONS = {"npy": ".npy", "npz": ".npz", "csv": ".csv"}
GLOB_CHARACTERS = "*?["
STATUSES = ("ok", "failed", "skipped", "interrupted")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`, counting from 1 (`--shard 1/4` … `--shard 4/4`)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, path: str) -> bool:
        """Whether `path` (as listed) belongs to this shard: a stable hash of the path, modulo N."""
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count + 1 == self.index


def parse_shard(text: str) -> Shard:
    """`"K/N"` -> Shard(K, N), with 1 <= K <= N."""
    index, slash, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not slash or shard is None or not 1 <= shard.index <= shard.count:
        raise UsageError(
            f"--shard {text}: expected K/N with 1 <= K <= N, such as 1/4; K counts from 1, so a 0-based "
            "task index needs +1 (SLURM: --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)"
        )
    return shard


def expand_inputs(arguments: Iterable[str], listed: Iterable[str] = ()) -> list[str]:
    """Paths from arguments and a list, sorted and de-duplicated (paths normalized).

    An argument with `*`, `?` or `[` that is not an existing path is a glob pattern (`**`
    spans directories; hidden files are left out, as in the shell); it must match at least one
    file. Listed paths (the lines of a list, as from `find`) are taken literally; blank ones are skipped.
    """
    found = []
    for argument in arguments:
        if argument == "-":
            raise UsageError("batch reads files, not stdin: use `rnncli run -` for one stream, --from-list - for paths")
        if any(c in argument for c in GLOB_CHARACTERS) and not os.path.lexists(argument):
            matches = [path for path in glob.glob(argument, recursive=True) if os.path.isfile(path)]
            if not matches:
                raise InputError(f"'{argument}' matches no files; check the pattern and the directory")
            found.extend(matches)
        else:
            found.append(argument)
    found.extend(path for path in listed if path.strip())
    return sorted({os.path.normpath(path) for path in found})


def inside(path: str, directory: str) -> bool:
    """Whether `path` lies directly in `directory` (symlinks resolved)."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(directory)


@dataclass(frozen=True)
class Job:
    """One input and the output it becomes."""

    source: str
    destination: str


@dataclass(frozen=True)
class BatchPlan:
    """This shard's jobs to run (`todo`) and with outputs already (`done`); all shards' `inputs`, sorted."""

    todo: list[Job]
    done: list[Job]
    inputs: list[str]
    left_out: list[str]
    shard: Shard | None = None


def output_name(source: str, fmt: str) -> str:
    """The output file name of an input: its stem (the name less its last extension) plus the format's."""
    stem = os.path.splitext(os.path.basename(source))[0]
    return stem + EXTENSIONS[fmt]


def check_own_outputs(arguments: Iterable[str], out_dir: str, fmt: str) -> None:
    """Refuse an input named on the command line that would be its own output: `OUT_DIR/<stem>.<ext>` is
    that very file (or a link to it). Inputs a glob or a list brings in from --out-dir are earlier
    outputs, which `plan_batch` leaves out."""
    for argument in arguments:
        destination = os.path.join(out_dir, output_name(argument, fmt))
        if os.path.isfile(argument) and os.path.exists(destination) and os.path.samefile(argument, destination):
            raise UsageError(
                f"{argument} would be its own output {destination} (--out-dir {out_dir}); give another --out-dir"
            )


def plan_batch(
    inputs: Sequence[str], out_dir: str, fmt: str, *, shard: Shard | None = None, overwrite: bool = False
) -> BatchPlan:
    """Map inputs to `out_dir/<stem>.<ext>`, refuse collisions, pick this shard, split off finished outputs.

    Collisions are checked over every input, not just this shard's, so no two shards can write one
    file. Inputs lying in `out_dir` itself (outputs of an earlier run caught by a glob) are left out.
    Output names are bare file names joined to `out_dir`, so no output lands outside it.
    """
    left_out = [path for path in inputs if inside(path, out_dir)] if os.path.isdir(out_dir) else []
    kept = [path for path in inputs if path not in set(left_out)] if left_out else list(inputs)
    writers: dict[str, list[str]] = {}
    for source in kept:
        writers.setdefault(output_name(source, fmt).casefold(), []).append(source)
    collisions = [sources for sources in writers.values() if len(sources) > 1]
    if collisions:
        shown = "; ".join(
            f"{os.path.join(out_dir, output_name(group[0], fmt))} <- {', '.join(group)}" for group in collisions[:5]
        )
        more = f" (and {len(collisions) - 5} more)" if len(collisions) > 5 else ""
        raise UsageError(
            f"{len(collisions)} output name(s) would be written by more than one input: {shown}{more}; "
            "rename the inputs or run them as separate batches with different --out-dir"
        )
    jobs = [
        Job(source, os.path.join(out_dir, output_name(source, fmt)))
        for source in kept
        if shard is None or shard.holds(source)
    ]
    finished = [not overwrite and os.path.exists(job.destination) for job in jobs]
    done = [job for job, exists in zip(jobs, finished) if exists]
    todo = [job for job, exists in zip(jobs, finished) if not exists]
    return BatchPlan(todo, done, kept, left_out, shard)


@dataclass(frozen=True)
class BatchSettings:
    """What every file shares besides the model: run settings and formats (`out_fmt` decides the extension)."""

    run: RunSettings
    out_fmt: str
    in_fmt: str | None = None
    key: str | None = None


@dataclass
class FileRecord:
    """The outcome for one input: status is "ok", "failed", "skipped" (output existed) or "interrupted"."""

    input: str
    status: str
    output: str | None = None
    input_shape: list[int] | None = None
    timesteps: int | None = None
    seconds: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_job(job: Job, built: BuiltModel, settings: BatchSettings) -> FileRecord:
    """Run one file; every failure becomes a "failed" record (an interrupt propagates)."""
    from .io import load_array

    start, shape = time.perf_counter(), None
    try:
        loaded = load_array(job.source, settings.in_fmt, key=settings.key)
        shape = list(loaded.array.shape)  # in the record even if the file then fails
        facts = run_to_file(built, loaded, job.destination, settings.run, settings.out_fmt)
    except RnnCliError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory: the file is too large for this machine with this many workers; use fewer --workers"
    except Exception as exc:  # a bug: isolate it to this file, name it in the report
        error = f"internal error: {type(exc).__name__}: {exc}"
    else:
        return FileRecord(
            job.source,
            "ok",
            job.destination,
            input_shape=facts.input["shape"],
            timesteps=facts.timing["timesteps"],
            seconds=time.perf_counter() - start,
            warnings=facts.warnings,
        )
    return FileRecord(
        job.source, "failed", input_shape=shape, seconds=time.perf_counter() - start, error=_naming(job.source, error)
    )


def _naming(source: str, error: str) -> str:
    """The error message, starting with the file's name (most of rnncli's messages already do)."""
    return error if error.startswith(source) else f"{source}: {error}"


def feature_count(source: str, in_fmt: str | None, key: str | None) -> int:
    """The number of features of an input: from the header of a .npy, else by reading the file."""
    from .io import as_sequences, format_from_name, load_array, open_input, read_npy_header

    if (in_fmt or format_from_name(source)) == "npy":
        with open_input(source) as fp:
            shape, _, _ = read_npy_header(fp, source)
        if len(shape) in (2, 3) and all(shape):
            return shape[-1]
        if len(shape) == 1 and shape[0]:
            return 1
    loaded = load_array(source, in_fmt, key=key)  # other formats; or refuses the shape with its reason
    return as_sequences(loaded.array, source).shape[-1]


def build_batch_model(
    options: ModelOptions, inputs: Sequence[str], settings: BatchSettings
) -> tuple[BuiltModel | None, str | None, dict[str, str]]:
    """The one model for every file, the file its feature count came from, and why inputs before it failed.

    With --weights the weights file decides the feature count (the first readable input only helps
    order a Keras .weights.h5's layers) and the options complete what the file does not record.
    Random weights take it from the first readable one of `inputs`: pass every input of the batch
    (all shards, finished ones too) so that every shard and every rerun builds the same model. The
    model is None when no input is readable; the reasons then cover them all.
    """
    unreadable, features, features_from = {}, None, None
    for source in inputs:
        try:
            features, features_from = feature_count(source, settings.in_fmt, settings.key), source
            break
        except RnnCliError as exc:
            unreadable[source] = _naming(source, str(exc))
    if options.weights is not None:  # files that do not fit it fail one by one, when they run
        from .weights import load_weights

        model = load_weights(options.weights, settings=weights_settings(options), input_size=features)
        return build_model(options, model.input_size), options.weights, {}
    if features is None:
        return None, None, unreadable
    return build_model(options, features), features_from, unreadable


@dataclass(frozen=True)
class PreparedBatch:
    """What every file of a batch shares, ready before any runs: the model (None when no input is readable),
    the input its feature count came from, why inputs before that one failed, and the settings it completes."""

    built: BuiltModel | None
    features_from: str | None
    unreadable: dict[str, str]
    settings: BatchSettings


def prepare_batch(
    options: ModelOptions, inputs: Sequence[str], settings: BatchSettings, dask_address: str | None = None
) -> PreparedBatch:
    """Everything that fails the whole batch, before any file runs: the model (weights file, options that
    contradict each other) and, for `dask_address`, the dask extra.

    `inputs` are every input of the batch in order (`BatchPlan.inputs`); the first readable one sets the
    feature count of random weights. A `return_mode` of None in `settings.run` takes the model's own (a
    .keras model's), else "sequence"; 3-D inputs are time-major when the model takes them so (an ONNX graph).
    """
    if dask_address is not None:
        _distributed()
    built, features_from, unreadable = build_batch_model(options, inputs, settings)
    if built is not None and settings.run.return_mode is None:
        settings = replace(settings, run=settings.run._replace(return_mode=built.return_mode or "sequence"))
    if built is not None and built.layout == "time-major":  # an ONNX graph that takes (T, B, F)
        settings = replace(settings, run=settings.run._replace(time_major=True))
    return PreparedBatch(built, features_from, unreadable, settings)


@dataclass
class BatchResult:
    """The records (completion order), the model, the input that set its feature count, the wall-clock time."""

    records: list[FileRecord]
    built: BuiltModel | None
    features_from: str | None
    seconds: float


Finished = Callable[[FileRecord], None]


def run_batch(
    jobs: Sequence[Job],
    prepared: PreparedBatch,
    *,
    workers: int = 1,
    dask_address: str | None = None,
    on_record: Finished = lambda record: None,
) -> BatchResult:
    """Run every job with the prepared model in a pool of `workers` processes, or on a Dask cluster.

    `on_record` sees each record as its file finishes (in the calling thread). An interrupt
    (KeyboardInterrupt: Ctrl-C, or SIGTERM as the CLI maps it) stops the batch: files in flight are
    abandoned without partial outputs, and the rest are recorded as "interrupted".
    """
    start = time.perf_counter()
    records: list[FileRecord] = []

    def finished(record: FileRecord) -> None:
        records.append(record)
        on_record(record)

    built, settings = prepared.built, prepared.settings
    if built is None:
        for job in jobs:
            error = prepared.unreadable.get(job.source) or _naming(
                job.source, "not run: no input of the batch is readable"
            )
            finished(FileRecord(job.source, "failed", error=error))
    elif dask_address is not None:
        _run_on_dask(dask_address, built, jobs, settings, finished)
    elif jobs:
        _run_in_pool(min(workers, len(jobs)), built, jobs, settings, finished)
    ran = {record.input for record in records}
    for job in jobs:
        if job.source not in ran:
            finished(FileRecord(job.source, "interrupted"))
    return BatchResult(records, built, prepared.features_from, time.perf_counter() - start)


# The local pool, also for one worker. Workers are spawned, not forked (a forked BLAS thread pool
# can deadlock), with one thread each, BLAS's and rnncli's (both follow the variables set below):
# N workers then keep N cores busy instead of oversubscribing them (measured in
# benchmarks/bench_batch.py; several times slower on a busy machine otherwise). The parent forwards
# an interrupt as SIGTERM; a worker then abandons its file (atomic_output removes the temporary
# output) and hands back the rest of its queue unrun.

_worker: dict[str, Any] = {"busy": False, "stopping": False}


def _start_worker(built: BuiltModel, settings: BatchSettings, pids: Any) -> None:
    _worker.update(built=built, settings=settings)
    signal.signal(signal.SIGINT, _stop_worker)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, _stop_worker)
    pids.put(os.getpid())


def _stop_worker(signum: int, frame: object) -> None:
    first = not _worker["stopping"]
    _worker["stopping"] = True
    if first and _worker["busy"]:
        raise KeyboardInterrupt


def _run_in_worker(job: Job) -> FileRecord:
    try:
        _worker["busy"] = True
        if _worker["stopping"]:
            return FileRecord(job.source, "interrupted")
        return run_job(job, _worker["built"], _worker["settings"])
    except KeyboardInterrupt:
        return FileRecord(job.source, "interrupted")
    finally:
        _worker["busy"] = False


@contextmanager
def _blas_threads_for_children(threads: int) -> Iterator[None]:
    """Processes started in this block get `threads` BLAS and rnncli threads, unless the user set the
    variables."""
    unset = [name for name in THREAD_VARIABLES if name not in os.environ]
    os.environ.update({name: str(threads) for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def _run_in_pool(
    workers: int, built: BuiltModel, jobs: Sequence[Job], settings: BatchSettings, finished: Finished
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed, wait

    context = multiprocessing.get_context("spawn")
    pids = context.SimpleQueue()
    with _blas_threads_for_children(1):
        executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(built, settings, pids)
        )
        futures: dict[Any, Job] = {}
        reported = set()
        try:
            for job in jobs:
                futures[executor.submit(_run_in_worker, job)] = job
            for future in as_completed(futures):
                reported.add(future)
                finished(_pool_record(future, futures[future]))
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()  # here: wait() never sees futures cancelled by shutdown(cancel_futures=True)
            while not pids.empty():
                with suppress(ProcessLookupError):
                    os.kill(pids.get(), signal.SIGTERM)
            started = [future for future in futures if not future.cancelled() and future not in reported]
            wait(started)
            for future in started:
                finished(_pool_record(future, futures[future]))
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def _pool_record(future: Any, job: Job) -> FileRecord:
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        return FileRecord(
            job.source, "failed", error="a worker process died (killed, or out of memory); rerun to retry this file"
        )


def _run_on_dask(
    address: str, built: BuiltModel, jobs: Sequence[Job], settings: BatchSettings, finished: Finished
) -> None:
    """The same jobs on a Dask cluster; its workers need rnncli installed and the same paths (a shared filesystem)."""
    distributed = _distributed()
    try:
        client = distributed.Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise RnnCliError(
            f"cannot reach the Dask scheduler at {address} ({exc}); check the address and that the scheduler runs"
        ) from None
    with client:
        model = client.scatter(built, broadcast=True)
        absolute = [Job(os.path.abspath(job.source), os.path.abspath(job.destination)) for job in jobs]
        futures = client.map(run_job, absolute, built=model, settings=settings, pure=False)
        originals = dict(zip(futures, jobs))
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                finished(_dask_record(future, originals[future]))
        except KeyboardInterrupt:
            client.cancel(futures)  # tasks already running finish, and write complete outputs


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("distributed", "dask", "--dask") from None
    return distributed


def _dask_record(future: Any, job: Job) -> FileRecord:
    try:
        record = future.result()
    except Exception as exc:  # the worker died, or the task could not run there
        return FileRecord(job.source, "failed", error=f"on the Dask cluster: {type(exc).__name__}: {exc}")
    error = record.error and record.error.replace(os.path.abspath(job.source), job.source)  # the name as given
    return replace(record, input=job.source, output=job.destination if record.status == "ok" else None, error=error)


def batch_report(plan: BatchPlan, result: BatchResult, out_dir: str) -> dict[str, Any]:
    """The --report document: one record per input of this shard, in input order, with counts."""
    from . import __version__

    by_input = {record.input: record for record in result.records}
    by_input.update({job.source: FileRecord(job.source, "skipped", job.destination) for job in plan.done})
    order = [job.source for job in plan.done + plan.todo]
    records = [by_input[source] for source in sorted(order)]
    counts = {status: sum(record.status == status for record in records) for status in STATUSES}
    return {
        "rnncli": __version__,
        "out_dir": out_dir,
        "shard": str(plan.shard) if plan.shard else None,
        "inputs": len(plan.inputs),
        "left_out": plan.left_out,
        "model": describe_model(result.built) if result.built is not None else None,
        "features_from": result.features_from,
        "counts": {"files": len(records), **counts},
        "seconds": result.seconds,
        "timesteps": sum(record.timesteps or 0 for record in records if record.status == "ok"),
        "files": [record.as_dict() for record in records],
    }
