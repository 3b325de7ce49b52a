"""Batch throughput with 1 vs N workers, and the per-row latency of `rnncli run --stream`.

    python benchmarks/bench_batch.py                    # both, on this machine's cores
    python benchmarks/bench_batch.py --only batch --files 400 --workers 1,2,4
    python benchmarks/bench_batch.py --only stream --rows 5000

Batch rows time the whole `rnncli batch` process (start-up, worker spawn, reading, the model,
atomic writes) over freshly made files, --overwrite each time; the figure is the median of
--repeats runs, interleaved across worker counts. "BLAS threads not limited" sets
OPENBLAS_NUM_THREADS/OMP_NUM_THREADS/MKL_NUM_THREADS to the core count, which rnncli then leaves
alone, to show what its default of one BLAS thread per worker buys. Other work on the machine
skews every figure: the load average is printed with the machine.

Stream rows write one CSV row into a running `rnncli run - --stream` and time until its output
line arrives on the other pipe: the latency a live pipeline sees, pipes and Python included.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RNNCLI = [sys.executable, "-m", "rnncli"]
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def machine() -> str:
    from rnncli.model import ENGINE

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, rnncli engine {ENGINE}, OPENBLAS_CORETYPE={coretype}; "
        f"{datetime.date.today().isoformat()}; load average {load}"
    )


def make_files(directory: Path, count: int, shape: tuple[int, ...]) -> int:
    """`count` float32 .npy files of `shape`; returns the timesteps of one file."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    for i in range(count):
        np.save(directory / f"rec{i:05d}.npy", rng.normal(size=shape).astype(np.float32))
    return int(np.prod(shape[:-1]))


def time_batch(inputs: Path, out: Path, workers: int, units: str, env: dict[str, str]) -> float:
    command = [*RNNCLI, "batch", str(inputs / "*.npy"), "--out-dir", str(out), "--units", units]
    command += ["--workers", str(workers), "--overwrite", "-q"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - start


def bench_batch(files: int, worker_counts: list[int], repeats: int) -> None:
    cores = str(os.cpu_count() or 1)
    free = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
    unlimited = {**free, **dict.fromkeys(BLAS_VARIABLES, cores)}
    workloads = [
        (f"{files} files (2000, 8), 64 units", (2000, 8), "64"),
        (f"{files // 4} files (32, 500, 8) batches, 256 units", (32, 500, 8), "256"),
    ]
    print("| workload | workers | BLAS threads | wall s | files/s | timesteps/s | speed-up |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for w, (label, shape, units) in enumerate(workloads):
            count = files if len(shape) == 2 else files // 4
            steps = make_files(Path(tmp) / f"in{w}", count, shape)
            variants = [(n, "1 per worker", free) for n in worker_counts]
            variants += [(n, f"{cores} (not limited)", unlimited) for n in worker_counts if n > 1]
            times: dict[int, list[float]] = {i: [] for i in range(len(variants))}
            for _ in range(repeats):
                for i, (n, _, env) in enumerate(variants):
                    times[i].append(time_batch(Path(tmp) / f"in{w}", Path(tmp) / f"out{w}", n, units, env))
            base = statistics.median(times[0])
            for i, (n, blas, _) in enumerate(variants):
                wall = statistics.median(times[i])
                print(
                    f"| {label} | {n} | {blas} | {wall:.2f} | {count / wall:.3g} | {count * steps / wall:,.0f} "
                    f"| {base / wall:.2f}× |"
                )


def microseconds(values: list[float], quantile: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(int(quantile * len(ordered)), len(ordered) - 1)] * 1e6:,.0f} µs"


def bench_stream(rows: int, configs: list[list[str]]) -> None:
    print("| model | rows | median | p90 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(1)
    for options in configs:
        proc = subprocess.Popen(
            [*RNNCLI, "run", "-", "--stream", *options, "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        latencies = []
        try:
            for i, values in enumerate(rng.normal(size=(rows + 50, 3))):
                start = time.perf_counter()
                proc.stdin.write((",".join(f"{v:.6f}" for v in values) + "\n").encode())
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 60)
                if not ready:
                    raise SystemExit("no output row within 60 s: is the stream buffered?")
                proc.stdout.readline()
                if i >= 50:  # the first rows include start-up and warm-up
                    latencies.append(time.perf_counter() - start)
        finally:
            proc.stdin.close()
            proc.wait()
        shown = " | ".join(microseconds(latencies, q) for q in (0.5, 0.9, 0.99, 1.0))
        print(f"| {' '.join(options)} | {rows:,} | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["batch", "stream"], help="Run one of the two benchmarks.")
    parser.add_argument("--files", type=int, default=400, help="Files per batch workload. [default: 400]")
    parser.add_argument("--workers", help="Comma list of worker counts. [default: 1 and the core count]")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per figure (the median is shown). [default: 3]")
    parser.add_argument("--rows", type=int, default=2000, help="Rows timed per stream. [default: 2000]")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",")] if args.workers else sorted({1, os.cpu_count() or 1})
    print(f"machine: {machine()}\n")
    if args.only in (None, "batch"):
        bench_batch(args.files, workers, args.repeats)
        print()
    if args.only in (None, "stream"):
        bench_stream(args.rows, [["--units", "64"], ["--units", "256", "--layers", "2"]])


if __name__ == "__main__":
    main()
