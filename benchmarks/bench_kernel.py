"""Micro-benchmark of the RNN recurrence kernel (no I/O, no input projection).

Compares, side by side in one run:

* single sequences (B=1), H in {16, 64, 256, 1024}, float32 and float64:
  the C kernel ``rnncli._kernel.recur`` vs the best pure-numpy loop
  (gemv into a scratch row, add, ``np.tanh(out=)``; plus SciPy's BLAS gemv
  accumulating straight into the row when SciPy is installed) vs the seed
  notebook's naive loop (``np.tanh(x_t + np.dot(U, h))`` + append + stack);
* batches, B in {8, 64, 512}, T=1000, F=32, H in {32, 128}: the C kernel vs
  a time-major numpy GEMM loop
  (``np.matmul(h, U.T, out=tmp); tmp += buf[t]; np.tanh(tmp, out=buf[t])``).

Every method gets the same precomputed input projection ``buf = x W^T + b``
(outside the timing) and runs the tanh recurrence over it.  Each cell is the
median of --repeats runs; results are printed as markdown tables.

Usage:  python benchmarks/bench_kernel.py [--repeats 5] [--target 0.2] [--blas-threads 1] [--quick] [--crossover]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if "--blas-threads" in sys.argv[:-1]:  # must be set before numpy loads OpenBLAS
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--blas-threads") + 1]

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rnncli import _kernel

try:  # optional: BLAS gemv with beta=1 accumulates into the output row in one call
    from scipy.linalg import blas as scipy_blas
except ImportError:  # pragma: no cover - depends on the environment
    scipy_blas = None

TANH = 0
MAX_BUF_BYTES = 64 << 20


# --------------------------------------------------------------------------
# the contenders; each takes (buf, u, h) and leaves outputs in buf (T, B, H)
# --------------------------------------------------------------------------


def run_kernel(buf, u, h):
    _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


def run_numpy_gemv(buf, u, h):
    """Best plain-numpy single-sequence loop: gemv into scratch, add, tanh in place."""
    tmp = np.empty(buf.shape[2], buf.dtype)
    state = h[0]
    for t in range(buf.shape[0]):
        row = buf[t, 0]
        np.dot(u, state, out=tmp)
        np.add(tmp, row, out=row)
        np.tanh(row, out=row)
        state = row
    h[0] = state


def run_scipy_gemv(buf, u, h):
    """BLAS ?gemv with beta=1 writing into the row itself (y = U h + y), then tanh in place."""
    gemv = scipy_blas.sgemv if buf.dtype == np.float32 else scipy_blas.dgemv
    state = h[0]
    for t in range(buf.shape[0]):
        row = buf[t, 0]
        gemv(1.0, u, state, beta=1.0, y=row, overwrite_y=True)
        np.tanh(row, out=row)
        state = row
    h[0] = state


def run_seed_loop(buf, u, h):
    """The seed notebook's loop, on the precomputed projections: tanh(x_t + U h), append, stack."""
    state = h[0]
    outputs = []
    for input_t in buf[:, 0]:
        output_t = np.tanh(input_t + np.dot(u, state))
        outputs.append(output_t)
        state = output_t
    buf[:, 0] = np.stack(outputs)
    h[0] = state


def run_numpy_gemm(buf, u, h):
    """Time-major batch loop: one GEMM per step into scratch, add, tanh into buf[t]."""
    tmp = np.empty(h.shape, buf.dtype)
    state = h
    ut = u.T
    for t in range(buf.shape[0]):
        np.matmul(state, ut, out=tmp)
        tmp += buf[t]
        np.tanh(tmp, out=buf[t])
        state = buf[t]
    h[...] = state


# --------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------


def make_problem(steps, batch, hidden, features, dtype, seed=0):
    """Keras-like weights (glorot-uniform W, orthogonal U, zero bias) and buf = x W^T + b."""
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6.0 / (features + hidden))
    w = rng.uniform(-limit, limit, (hidden, features))
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    u = q * np.sign(np.diag(r))
    x = rng.standard_normal((steps, batch, features))
    buf = (x @ w.T).astype(dtype)
    return np.ascontiguousarray(buf), np.ascontiguousarray(u, dtype=dtype), np.zeros((batch, hidden), dtype)


def time_once(fn, buf0, u, h0):
    buf, h = buf0.copy(), h0.copy()
    t0 = time.perf_counter()
    fn(buf, u, h)
    return time.perf_counter() - t0, buf


def median_time(fn, buf0, u, h0, repeats):
    fn(*[a.copy() for a in (buf0[: min(len(buf0), 8)], u, h0)])  # warm-up (BLAS threads, caches)
    times = [time_once(fn, buf0, u, h0)[0] for _ in range(repeats)]
    return statistics.median(times)


def steps_for(hidden, batch, features, dtype, target):
    """T such that the slowest candidate (the numpy loop) runs ~target seconds, within a memory cap."""
    buf0, u, h0 = make_problem(64, batch, hidden, features, dtype)
    per_step = min(time_once(run_numpy_gemv, buf0, u, h0)[0] for _ in range(3)) / 64
    steps = int(target / max(per_step, 1e-9))
    cap = MAX_BUF_BYTES // (batch * hidden * np.dtype(dtype).itemsize)
    return max(20, min(steps, cap))


def fmt_us(seconds_per_step):
    us = seconds_per_step * 1e6
    return f"{us:.3f}" if us < 10 else f"{us:.1f}" if us < 1000 else f"{us:.0f}"


# --------------------------------------------------------------------------
# the two tables
# --------------------------------------------------------------------------


def bench_single(hiddens, dtypes, repeats, target, check):
    methods = [("C kernel", run_kernel), ("numpy gemv+tanh(out=)", run_numpy_gemv)]
    if scipy_blas is not None:
        methods.append(("scipy ?gemv(beta=1)+tanh(out=)", run_scipy_gemv))
    methods.append(("seed naive loop", run_seed_loop))
    names = [m[0] for m in methods]
    print(f"\n## Single sequence (B=1), tanh, µs per step (median of {repeats})\n")
    print("| H | dtype | T | " + " | ".join(names) + " | numpy / kernel | seed / kernel | max abs diff |")
    print("|---:|---|---:|" + "---:|" * len(names) + "---:|---:|---:|")
    for hidden in hiddens:
        for dtype in dtypes:
            steps = steps_for(hidden, 1, 32, dtype, target)
            buf0, u, h0 = make_problem(steps, 1, hidden, 32, dtype)
            per = {}
            for name, fn in methods:
                per[name] = median_time(fn, buf0, u, h0, repeats) / steps
            diff = float("nan")
            if check:
                short = buf0[: min(steps, 200)]
                out_k = time_once(run_kernel, short, u, h0)[1]
                out_n = time_once(run_numpy_gemv, short, u, h0)[1]
                diff = float(np.max(np.abs(out_k.astype(np.float64) - out_n)))
            cells = " | ".join(fmt_us(per[n]) for n in names)
            best_np = min(per[n] for n in names[1:-1])
            print(
                f"| {hidden} | {np.dtype(dtype).name} | {steps} | {cells} | "
                f"{best_np / per['C kernel']:.1f}× | {per['seed naive loop'] / per['C kernel']:.1f}× | {diff:.1e} |"
            )


def bench_batch(batches, hiddens, dtypes, repeats, steps, features):
    print(f"\n## Batches, tanh, T={steps}, F={features}, µs per step (median of {repeats})\n")
    print("| B | H | B·H | dtype | C kernel | numpy GEMM loop | numpy / kernel | faster |")
    print("|---:|---:|---:|---|---:|---:|---:|---|")
    for dtype in dtypes:
        for hidden in hiddens:
            for batch in batches:
                buf0, u, h0 = make_problem(steps, batch, hidden, features, dtype)
                tk = median_time(run_kernel, buf0, u, h0, repeats) / steps
                tn = median_time(run_numpy_gemm, buf0, u, h0, repeats) / steps
                print(
                    f"| {batch} | {hidden} | {batch * hidden} | {np.dtype(dtype).name} | {fmt_us(tk)} | "
                    f"{fmt_us(tn)} | {tn / tk:.2f}× | {'kernel' if tk < tn else 'numpy'} |"
                )


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    print("## Machine\n")
    print(f"- CPU: {model} ({os.cpu_count()} logical CPUs), {platform.system()} {platform.machine()}")
    print(f"- Python {platform.python_version()}, numpy {np.__version__}", end="")
    print(f", scipy {__import__('scipy').__version__}" if scipy_blas is not None else ", scipy not installed")
    print(f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", end="")
    print(f", OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    print(f"- kernel code path: {_kernel.isa()} (available: {', '.join(_kernel.available_isas())})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell; the median is shown (default 5)")
    parser.add_argument("--target", type=float, default=0.2, help="seconds per single-sequence run (default 0.2)")
    parser.add_argument("--steps", type=int, default=1000, help="T for the batch table (default 1000)")
    parser.add_argument("--isa", choices=_kernel.available_isas(), help="force a kernel code path")
    parser.add_argument("--quick", action="store_true", help="fewer sizes, for a smoke run")
    parser.add_argument("--crossover", action="store_true", help="sweep more batch sizes to locate the crossover")
    parser.add_argument(
        "--blas-threads", metavar="N", help="set OPENBLAS_NUM_THREADS (the kernel itself is single-threaded)"
    )
    parser.add_argument("--skip-single", action="store_true", help="only the batch table")
    parser.add_argument("--skip-batch", action="store_true", help="only the single-sequence table")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.isa:
        _kernel._set_isa(args.isa)

    dtypes = [np.float32, np.float64]
    hiddens = [16, 64] if args.quick else [16, 64, 256, 1024]
    batches = [8, 64, 512]
    batch_hiddens = [32, 128]
    if args.crossover:
        batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        batch_hiddens = [16, 32, 64, 128, 256]
    if args.quick:
        batches, batch_hiddens, dtypes_batch = [8, 64], [32], [np.float32]
    else:
        dtypes_batch = dtypes

    machine()
    if not args.skip_single:
        bench_single(hiddens, dtypes, args.repeats, args.target, check=True)
    if not args.skip_batch:
        bench_batch(batches, batch_hiddens, dtypes_batch, args.repeats, args.steps, 32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
