# ruff: noqa: B023 - the timed closures run within their own loop iteration
"""Whole-process and kernel benchmarks: rnncli against onnxruntime and PyTorch, side by side in one run.

    python benchmarks/bench_run.py                      # everything rnncli can run; peers when importable
    python benchmarks/bench_run.py --peer-python /path/to/python-with-torch-and-onnxruntime
    python benchmarks/bench_run.py --only startup,memory
    python benchmarks/bench_run.py --only whole --workdir /dev/shm   # files in memory: no disk in the figures

Every figure is the median of --repeats runs, interleaved so machine noise hits all contenders alike, with
an untimed `sync` before each run so that none pays for the disk writeback of the one before.
Whole-process rows time `rnncli run x.npy --weights w.npz -o y.npy` against a short script doing the same
job with the peer (load the .npy, build the model from the same weights, run, save the .npy).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PEER_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    peer, x_path, w_path, y_path, dtype = sys.argv[1:6]
    x = np.load(x_path)
    w = dict(np.load(w_path))
    single = x.ndim == 2
    H, F = w["weight_ih_l0"].shape
    if peer == "torch":
        import torch
        torch.set_grad_enabled(False)
        rnn = torch.nn.RNN(F, H, batch_first=True, dtype=getattr(torch, dtype))
        rnn.load_state_dict({k: torch.from_numpy(v) for k, v in w.items() if not k.startswith("__")})
        y = rnn(torch.from_numpy(x[None] if single else x))[0].numpy()
    else:
        import onnx, onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        B = numpy_helper.from_array(np.concatenate([w["bias_ih_l0"], w["bias_hh_l0"]])[None], "B")
        node = helper.make_node("RNN", ["X", "W", "R", "B"], ["Y"], hidden_size=H)  # ORT supports layout=0 only
        graph = helper.make_graph(
            [node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w["weight_ih_l0"][None], "W"),
             numpy_helper.from_array(w["weight_hh_l0"][None], "R"), B],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        time_major = x[:, None] if single else np.ascontiguousarray(x.transpose(1, 0, 2))
        y = session.run(None, {"X": time_major})[0][:, 0]  # (T, D=1, B, H) -> (T, B, H)
        y = y.transpose(1, 0, 2)  # (B, T, H)
    np.save(y_path, y[0] if single else y)
    """
)


def median_times(commands: dict[str, list[str]], repeats: int, env: dict[str, str]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            if hasattr(os, "sync"):
                os.sync()  # untimed: no run pays for the previous run's disk writeback
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peers_available(python: str) -> list[str]:
    found = []
    for peer, module in (("onnxruntime", "onnxruntime"), ("torch", "torch")):
        probe = subprocess.run(
            [python, "-c", f"import {module}, onnx" if peer == "onnxruntime" else f"import {module}"],
            capture_output=True,
        )
        if probe.returncode == 0:
            found.append(peer)
    return found


def make_job(directory: Path, shape: tuple[int, ...], units: int, dtype: str) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=shape).astype(dtype)
    features = shape[-1]
    k = 1 / np.sqrt(units)
    weights = {
        "weight_ih_l0": rng.uniform(-k, k, (units, features)),
        "weight_hh_l0": rng.uniform(-k, k, (units, units)),
        "bias_ih_l0": rng.uniform(-k, k, units),
        "bias_hh_l0": rng.uniform(-k, k, units),
    }
    x_path, w_path = directory / f"x_{'_'.join(map(str, shape))}_{dtype}.npy", directory / f"w_{units}_{dtype}.npz"
    np.save(x_path, x)
    np.savez(w_path, **{name: t.astype(dtype) for name, t in weights.items()})
    return x_path, w_path


def whole_process(args: argparse.Namespace, directory: Path, peers: list[str], env: dict[str, str]) -> list[str]:
    rows = [
        "| job | dtype | rnncli (s) | " + " | ".join(f"{p} (s)" for p in peers) + " | rnncli / best peer |",
        "|---|---|---|" + "---|" * len(peers) + "---|",
    ]
    script = directory / "peer.py"
    script.write_text(PEER_SCRIPT)
    jobs = [
        ("single T=1,000,000 F=32 H=64", (1_000_000, 32), 64),
        ("batch B=512 T=1000 F=32 H=128", (512, 1000, 32), 128),
    ]
    for label, shape, units in jobs:
        for dtype in args.dtypes:
            x, w = make_job(directory, shape, units, dtype)
            commands = {
                "rnncli": [args.rnncli, "run", str(x), "--weights", str(w), "-o", str(directory / "y.npy"), "-q"]
            }
            for peer in peers:
                if peer == "onnxruntime" and dtype == "float64":
                    continue  # onnxruntime has no float64 RNN kernel
                commands[peer] = [
                    args.peer_python,
                    str(script),
                    peer,
                    str(x),
                    str(w),
                    str(directory / f"y_{peer}.npy"),
                    dtype,
                ]
            result = median_times(commands, args.repeats, env)
            for peer in peers:
                if peer in result:
                    ours = np.load(directory / "y.npy")
                    theirs = np.load(directory / f"y_{peer}.npy")
                    error = float(np.abs(ours - theirs).max())
                    if error > (1e-4 if dtype == "float32" else 1e-10):
                        raise SystemExit(f"{label} {dtype}: rnncli and {peer} disagree by {error}")
            best = min((t for name, t in result.items() if name != "rnncli"), default=None)
            cells = [f"{result[p]:.3f}" if p in result else "—" for p in peers]
            ratio = f"{result['rnncli'] / best:.2f}×" if best else "—"
            rows.append(f"| {label} | {dtype} | {result['rnncli']:.3f} | " + " | ".join(cells) + f" | {ratio} |")
    return rows


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def kernels(args: argparse.Namespace) -> list[str]:
    """Forward pass only, in this process: rnncli's engines, the recurrence kernel alone, the bound, the seed loop.

    "kernel alone" runs the compiled recurrence over a buffer already holding the input projection.
    "bound" is what the work needs with BLAS doing it: the projection GEMM plus, per step, one
    state GEMM (or GEMV), the add and tanh, on contiguous time-major buffers.
    """
    from rnncli import init_model
    from rnncli import model as model_module

    rows = [
        "| shape | dtype | rnncli forward | numpy engine | kernel alone | bound (BLAS) | forward / bound | seed loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cases = [
        ((200_000, 32), 16),
        ((200_000, 32), 64),
        ((50_000, 32), 256),
        ((5_000, 32), 1024),
        ((8, 1000, 32), 32),
        ((64, 1000, 32), 128),
        ((512, 1000, 32), 128),
    ]
    kernel = model_module._kernel
    for shape, units in cases:
        for dtype in args.dtypes:
            x = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(dtype)
            model = init_model(shape[-1], units, init="torch", dtype=dtype)
            cell = model.layers[0][0]
            steps, batch = (shape[0], 1) if len(shape) == 2 else (shape[1], shape[0])
            per_step = 1e6 / steps
            forward = _median_seconds(lambda: model.forward(x), args.repeats) * per_step
            model_module._kernel = None
            numpy_engine = _median_seconds(lambda: model.forward(x), args.repeats) * per_step
            model_module._kernel = kernel
            projected = np.random.default_rng(1).uniform(-1, 1, size=(steps, batch, units)).astype(dtype)
            alone = "—"
            if kernel is not None:
                work = projected.copy()
                state = np.zeros((batch, units), dtype)
                recur = lambda: kernel.recur(work, cell.w_hh, state, 0, 0.0, 1.0, False)  # noqa: E731
                seconds = _median_seconds(recur, args.repeats)
                alone = f"{seconds * per_step:.3f}"
            recurrent = np.ascontiguousarray(cell.w_hh.T)
            scratch = np.zeros((batch, units), dtype)
            flat = x.reshape(-1, shape[-1])

            def blas_bound() -> None:
                np.matmul(flat, cell.w_ih.T)
                for t in range(steps):
                    if batch == 1:
                        np.dot(cell.w_hh, scratch[0], out=scratch[0])
                    else:
                        np.matmul(scratch, recurrent, out=projected[t])
                    np.add(projected[t], scratch, out=scratch)
                    np.tanh(scratch, out=scratch)

            bound = _median_seconds(blas_bound, args.repeats) * per_step
            seed = "—"
            if len(shape) == 2:
                w, u, b = cell.w_ih, cell.w_hh, cell.b_ih + cell.b_hh
                n = min(steps, 20_000)
                start = time.perf_counter()
                h = np.zeros(units, dtype)
                for x_t in x[:n]:
                    h = np.tanh(np.dot(w, x_t) + np.dot(u, h) + b)
                seed = f"{(time.perf_counter() - start) / n * 1e6:.3f}"
            label = "×".join(map(str, shape)) + f" H={units}"
            rows.append(
                f"| {label} | {dtype} | {forward:.3f} | {numpy_engine:.3f} | {alone} | {bound:.3f} "
                f"| {forward / bound:.2f} | {seed} |"
            )
    return rows


def startup(args: argparse.Namespace, directory: Path, env: dict[str, str]) -> list[str]:
    tiny = directory / "tiny.npy"
    np.save(tiny, np.zeros((10, 3), np.float32))
    commands = {
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "rnncli --help": [args.rnncli, "--help"],
        "rnncli run tiny.npy (10×3) -o": [args.rnncli, "run", str(tiny), "-o", str(directory / "t.npy"), "-q"],
    }
    result = median_times(commands, max(args.repeats, 10), env)
    base = result["python -c 'import numpy'"]
    rows = ["| command | median (ms) | vs import numpy |", "|---|---|---|"]
    rows += [f"| `{name}` | {t * 1000:.0f} | {t / base:.2f}× |" for name, t in result.items()]
    return rows


def memory(args: argparse.Namespace, directory: Path, env: dict[str, str]) -> list[str]:
    steps = args.memory_steps
    path = directory / "big.npy"
    rng = np.random.default_rng(0)
    with open(path, "wb") as fp:  # written in pieces so the benchmark itself stays small
        header = np.lib.format.header_data_from_array_1_0(np.zeros((0, 32), np.float32))
        header["shape"] = (steps, 32)
        np.lib.format.write_array_header_1_0(fp, header)
        for start in range(0, steps, 1 << 20):
            rng.uniform(-1, 1, size=(min(1 << 20, steps - start), 32)).astype(np.float32).tofile(fp)
    timer = shutil.which("time") or "/usr/bin/time"
    out = directory / "big_out.npy"
    proc = subprocess.run(
        [timer, "-f", "%M %e", args.rnncli, "run", str(path), "--units", "16", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    rss_kib, seconds = proc.stderr.strip().splitlines()[-1].split()
    size = path.stat().st_size
    ok = np.load(out, mmap_mode="r").shape == (steps, 16)
    path.unlink()
    out.unlink()
    return [
        "| input | output | peak RSS | wall time | output valid |",
        "|---|---|---|---|---|",
        f"| {size / 2**30:.2f} GiB ({steps:,} × 32 float32) | ({steps:,}, 16) .npy | {int(rss_kib) / 1024:.0f} MiB "
        f"| {float(seconds):.1f} s | {ok} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rnncli", default=shutil.which("rnncli") or "rnncli")
    parser.add_argument("--peer-python", default=sys.executable, help="a Python with torch / onnx + onnxruntime")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--only", default="machine,whole,kernels,startup,memory")
    parser.add_argument("--memory-steps", type=int, default=16_777_216, help="2 GiB of float32 at F=32")
    parser.add_argument(
        "--workdir", help="where inputs and outputs go (default: the system's temp dir); /dev/shm takes the disk out"
    )
    args = parser.parse_args()
    args.dtypes = args.dtypes.split(",")
    sections = args.only.split(",")
    env = dict(os.environ)
    from rnncli.model import ENGINE

    if "machine" in sections:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        python = platform.python_version()
        print(f"- date: {time.strftime('%Y-%m-%d')}; machine: {cpu}, {os.cpu_count()} cores; Python {python}")
        coretype = env.get("OPENBLAS_CORETYPE", "(unset)")
        print(f"- numpy {np.__version__}; rnncli engine: {ENGINE}; OPENBLAS_CORETYPE={coretype}")
        probe = (
            "import importlib.metadata as m\nfor p in ('torch', 'onnxruntime'):\n"
            " try: print(p, m.version(p))\n except Exception: pass"
        )
        versions = subprocess.run([args.peer_python, "-c", probe], capture_output=True, text=True).stdout.split("\n")
        print("- peers: " + ", ".join(v for v in versions if v) + "\n")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        directory = Path(tmp)
        if "whole" in sections:
            peers = peers_available(args.peer_python)
            print(f"### Whole process (median of {args.repeats})\n")
            print("\n".join(whole_process(args, directory, peers, env)) + "\n")
        if "kernels" in sections:
            print(f"### Forward pass only (median of {args.repeats})\n")
            print("\n".join(kernels(args)) + "\n")
        if "startup" in sections:
            print("### Start-up\n")
            print("\n".join(startup(args, directory, env)) + "\n")
        if "memory" in sections:
            print("### Memory\n")
            print("\n".join(memory(args, directory, env)) + "\n")


if __name__ == "__main__":
    main()
