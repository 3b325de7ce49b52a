"""`rnncli batch`: expansion, naming, sharding, failure isolation, resume, interrupts, the Dask path."""

import glob
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.batch import Job, Shard, expand_inputs, output_name, parse_shard, plan_batch
from rnncli.cli import main
from rnncli.errors import InputError, UsageError
from rnncli.pipeline import ModelOptions, build_model

GOOD = 200


def invoke(*args, input=None):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """200 good (20, 3) files (some a directory deeper), one corrupt, one with 4 features; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    (tmp_path / "data" / "deep").mkdir(parents=True)
    arrays = {}
    for i in range(GOOD):
        name = f"data/deep/s{i:03d}.npy" if i % 10 == 0 else f"data/s{i:03d}.npy"
        arrays[f"s{i:03d}"] = rng.normal(size=(20, 3)).astype(np.float32)
        np.save(name, arrays[f"s{i:03d}"])
    Path("data/corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    np.save("data/wide.npy", rng.normal(size=(20, 4)).astype(np.float32))
    return arrays


def expected(x, units=8, **options):
    return build_model(ModelOptions(units=(units,), **options), x.shape[-1]).model.forward(x)


def outputs(directory):
    return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir())}


def test_a_batch_writes_every_good_file_and_names_the_bad_ones(data):
    result = invoke("batch", "data/**/*.npy", "--out-dir", "out", "--units", 8, "--workers", 2, "--report", "r.json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "data/corrupt.npy: not a valid .npy file" in result.stderr
    assert "data/wide.npy: the model takes 3 input features but the data has 4" in result.stderr
    assert "2 of 202 files failed (data/corrupt.npy, data/wide.npy)" in result.stderr
    written = sorted(os.listdir("out"))
    assert written == sorted(f"{stem}.npy" for stem in data)
    for stem, x in data.items():
        np.testing.assert_array_equal(np.load(f"out/{stem}.npy"), expected(x).sequence)

    report = json.loads(Path("r.json").read_text())
    assert report["counts"] == {"files": 202, "ok": 200, "failed": 2, "skipped": 0, "interrupted": 0}
    assert report["features_from"] == "data/deep/s000.npy" and report["model"]["units"] == [8]
    records = {record["input"]: record for record in report["files"]}
    assert records["data/s001.npy"]["status"] == "ok" and records["data/s001.npy"]["input_shape"] == [20, 3]
    assert records["data/s001.npy"]["output"] == "out/s001.npy" and records["data/s001.npy"]["seconds"] > 0
    assert records["data/s001.npy"]["timesteps"] == 20 and records["data/s001.npy"]["error"] is None
    assert records["data/wide.npy"]["status"] == "failed" and records["data/wide.npy"]["output"] is None
    assert "4" in records["data/wide.npy"]["error"]


def test_batch_outputs_equal_single_runs_byte_for_byte(data):
    assert invoke("batch", "data/s00*.npy", "--out-dir", "out", "--units", 8, "--seed", 3, "-q").exit_code == 0
    for name in ("s001", "s009"):
        single = invoke("run", f"data/{name}.npy", "--units", 8, "--seed", 3, "-q")
        assert Path(f"out/{name}.npy").read_bytes() == single.stdout_bytes


def test_a_rerun_rewrites_nothing_and_says_how_many_it_skips(data):
    invoke("batch", "data/**/*.npy", "--out-dir", "out", "--units", 8, "--workers", 2)
    before = {path: (os.stat(path).st_ino, os.stat(path).st_mtime_ns) for path in glob.glob("out/*")}
    again = invoke("batch", "data/**/*.npy", "--out-dir", "out", "--units", 8, "--workers", 2)
    assert again.exit_code == 1  # the two bad files fail again
    assert "skipping 200 inputs whose outputs exist" in again.stderr
    assert {path: (os.stat(path).st_ino, os.stat(path).st_mtime_ns) for path in glob.glob("out/*")} == before
    redo = invoke("batch", "data/s00*.npy", "--out-dir", "out", "--units", 8, "--overwrite", "-q")
    assert redo.exit_code == 0 and os.stat("out/s001.npy").st_ino != before["out/s001.npy"][0]


def test_random_weights_take_features_from_the_first_readable_input_of_the_whole_batch(data):
    np.save("data/a_first.npy", np.ones((5, 4), np.float32))  # sorts first: every shard and rerun sizes from it
    report = json.loads(invoke("batch", "data/s001.npy", "data/a_first.npy", "--out-dir", "o", "--report", "-").stdout)
    assert report["features_from"] == "data/a_first.npy" and report["model"]["input_size"] == 4
    assert report["counts"]["failed"] == 1  # s001 has 3 features
    Path("data/a_first.npy").write_bytes(b"not an array")
    report = json.loads(invoke("batch", "data/s001.npy", "data/a_first.npy", "--out-dir", "o2", "--report", "-").stdout)
    assert report["features_from"] == "data/s001.npy" and report["counts"]["ok"] == 1


def test_weights_decide_the_features(data):
    invoke("run", "data/wide.npy", "--units", 5, "--save-weights", "w.npz", "-q")
    result = invoke("batch", "data/s001.npy", "data/wide.npy", "--out-dir", "o", "--weights", "w.npz")
    assert result.exit_code == 1 and os.listdir("o") == ["wide.npy"]
    assert "data/s001.npy: weights w.npz take 4 input features but the data has 3" in result.stderr


def test_weights_files_take_the_settings_they_do_not_record(tmp_path, monkeypatch):
    # a .weights.h5 stores no merge mode: without --merge sum its layers do not chain, with it they do
    monkeypatch.chdir(tmp_path)
    models = Path(__file__).parent / "fixtures" / "models"
    with np.load(models / "keras_bi_sum.expected.npz", allow_pickle=False) as golden:
        x, keras_output = golden["x"], golden["keras_output"]
    for i in range(2):
        np.save(f"x{i}.npy", x)
    weights = ["--weights", models / "keras_bi_sum.weights.h5"]
    refused = invoke("batch", "x0.npy", "x1.npy", "--out-dir", "o1", *weights)
    assert refused.exit_code == 1 and "no order of the layers chains their shapes" in refused.stderr
    done = invoke("batch", "x0.npy", "x1.npy", "--out-dir", "o2", *weights, "--merge", "sum", "--return", "final")
    assert done.exit_code == 0
    for i in range(2):
        np.testing.assert_allclose(np.load(f"o2/x{i}.npy"), keras_output, rtol=0, atol=1e-5)


def test_saved_weights_repeat_the_batch(data):
    invoke("batch", "data/s00*.npy", "--out-dir", "o", "--init", "torch", "--save-weights", "w.npz", "-q")
    single = invoke("run", "data/s003.npy", "--weights", "w.npz", "-q")
    assert Path("o/s003.npy").read_bytes() == single.stdout_bytes


def test_shards_cover_every_input_exactly_once():
    paths = [f"dir{i % 7}/file{i:04d}.npy" for i in range(500)]
    for count in (1, 2, 3, 8):
        owners = [[k for k in range(1, count + 1) if Shard(k, count).holds(path)] for path in paths]
        assert all(len(found) == 1 for found in owners)
        sizes = [sum(found == [k] for found in owners) for k in range(1, count + 1)]
        assert min(sizes) > 0.7 * len(paths) / count  # roughly balanced
    assert Shard(2, 5).holds("a/b.npy") == Shard(2, 5).holds("a/b.npy")


def test_shard_runs_together_equal_one_run(data):
    invoke("batch", "data/**/*.npy", "--out-dir", "whole", "--units", 8, "-q")
    seen = []
    for k in (1, 2, 3):
        shard = ["--shard", f"{k}/3", "--report", "-", "-q"]
        report = json.loads(invoke("batch", "data/**/*.npy", "--out-dir", "sharded", "--units", 8, *shard).stdout)
        assert report["shard"] == f"{k}/3" and report["counts"]["skipped"] == 0
        seen += [record["input"] for record in report["files"]]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 202
    assert outputs("sharded") == outputs("whole")


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "3", "1/0"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(UsageError, match="K counts from 1"):
        parse_shard(text)
    assert parse_shard("4/4") == Shard(4, 4)


def test_from_list_on_stdin(data):
    Path("data/with space.npy").write_bytes(Path("data/s001.npy").read_bytes())
    listing = "data/s002.npy\n\n./data/s002.npy\ndata/with space.npy\n"
    result = invoke("batch", "--from-list", "-", "--out-dir", "o", "-q", input=listing)
    assert result.exit_code == 0 and sorted(os.listdir("o")) == ["s002.npy", "with space.npy"]
    find = subprocess.run(["find", "data/deep", "-name", "*.npy"], capture_output=True, check=True).stdout
    result = invoke("batch", "--from-list", "-", "--out-dir", "o2", "-q", input=find)
    assert result.exit_code == 0 and len(os.listdir("o2")) == 20
    nothing_new = invoke("batch", "--from-list", "-", "--out-dir", "o3", "--report", "-", "-q", input="")
    assert nothing_new.exit_code == 0 and json.loads(nothing_new.stdout)["counts"]["files"] == 0


def test_expansion_sorts_deduplicates_and_keeps_to_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b.npy", "a.npy", "sub/c.npy", "sub/dir.npy/x.npy", ".hidden.npy"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"")
    assert expand_inputs(["**/*.npy", "./a.npy", "b.npy"]) == ["a.npy", "b.npy", "sub/c.npy", "sub/dir.npy/x.npy"]
    assert expand_inputs(["missing.npy"], ["listed[1].npy"]) == ["listed[1].npy", "missing.npy"]  # literal paths
    with pytest.raises(InputError, match=r"'nothing/\*.npy' matches no files"):
        expand_inputs(["nothing/*.npy"])


def test_missing_and_empty_inputs(data):
    assert invoke("batch", "--out-dir", "o").exit_code == 2
    assert invoke("batch", "-", "--out-dir", "o").exit_code == 2
    result = invoke("batch", "data/s001.npy", "data/nope.npy", "--out-dir", "o")
    assert result.exit_code == 1 and "data/nope.npy: no such file" in result.stderr
    assert os.listdir("o") == ["s001.npy"]


def test_colliding_output_names_are_refused_before_any_work(data):
    os.mkdir("other")
    Path("other/s001.csv").write_text("1,2,3\n")
    result = invoke("batch", "data/**/*.npy", "other/s001.csv", "--out-dir", "o")
    assert result.exit_code == 2 and "o/s001.npy <- data/s001.npy, other/s001.csv" in result.stderr
    assert not os.path.exists("o")
    sharded = invoke("batch", "data/**/*.npy", "other/s001.csv", "--out-dir", "o", "--shard", "1/50")
    assert sharded.exit_code == 2  # checked over every shard's inputs, so no two shards write one file


def test_outputs_never_land_outside_the_out_dir(tmp_path, monkeypatch):
    (tmp_path / "work" / "out").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    np.save(tmp_path / "up.npy", np.ones((4, 2)))
    np.save(tmp_path / "..npy", np.ones((4, 2)))
    jobs = plan_batch(["../up.npy", "../..npy", "/etc/../tmp/../x/y.npy"], "out", "csv").todo
    assert [os.path.dirname(job.destination) for job in jobs] == ["out"] * 3
    listing = "../up.npy\n../..npy\n"
    result = invoke("batch", "--from-list", "-", "--out-dir", "out", "--from", "npy", "-q", input=listing)
    assert result.exit_code == 0
    assert sorted(os.listdir("out")) == ["..npy.npy", "up.npy"]
    assert sorted(os.listdir(tmp_path)) == ["..npy", "up.npy", "work"]


def test_outputs_of_an_earlier_run_are_not_inputs(data):
    first = invoke("batch", "data/**/*.npy", "--out-dir", "data/out", "-q")
    assert first.exit_code == 1
    again = invoke("batch", "data/**/*.npy", "--out-dir", "data/out")
    assert "leaving out 200 inputs lying in --out-dir data/out" in again.stderr
    assert "skipping 200" in again.stderr and "<-" not in again.stderr


def test_output_names_and_formats(data):
    assert output_name("a/b.c.npy", "csv") == "b.c.csv"
    final = invoke("batch", "data/s00[12].npy", "--out-dir", "f", "--units", 5, "--return", "final", "--to", "csv")
    assert final.exit_code == 0 and sorted(os.listdir("f")) == ["s001.csv", "s002.csv"]
    row = np.loadtxt("f/s001.csv", delimiter=",", dtype=np.float32)
    np.testing.assert_array_equal(row, expected(data["s001"], units=5).final)
    both = invoke("batch", "data/s001.npy", "--out-dir", "b", "--return", "both")
    assert both.exit_code == 0 and sorted(np.load("b/s001.npz").files) == ["final", "sequence"]
    assert invoke("batch", "data/s001.npy", "--out-dir", "b", "--return", "both", "--to", "csv").exit_code == 2


def test_nan_policy_applies_per_file(data):
    x = data["s001"].copy()
    x[3, 1] = np.nan
    np.save("data/s001.npy", x)
    warned = invoke("batch", "data/s00[12].npy", "--out-dir", "w", "--report", "-", "-q")
    assert warned.exit_code == 0
    assert "1 NaN" in json.loads(warned.stdout)["files"][0]["warnings"][0]
    strict = invoke("batch", "data/s00[12].npy", "--out-dir", "e", "--on-nan", "error", "-q")
    assert strict.exit_code == 1 and "data/s001.npy: holds 1 NaN" in strict.stderr
    assert os.listdir("e") == ["s002.npy"]


def test_progress_and_summary_go_to_stderr_and_quiet_silences_them(data):
    loud = invoke("batch", "data/s00*.npy", "--out-dir", "o")
    assert loud.stdout == "" and "rnncli batch" in loud.stderr and "9 written" in loud.stderr  # s000 is deeper
    assert "timesteps/s" in loud.stderr and "9/9" in loud.stderr
    quiet = invoke("batch", "data/s01*.npy", "--out-dir", "o", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_dask_needs_its_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = invoke("batch", "data/s001.npy", "--out-dir", "o", "--dask", "tcp://127.0.0.1:8786")
    assert result.exit_code == 1 and "pip install 'rnncli[dask]'" in result.stderr
    assert invoke("batch", "data/s001.npy", "--out-dir", "o", "--dask", "x", "--workers", 2).exit_code == 2


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_dask_gives_the_same_outputs_report_and_exit_code(data, dask_cluster):
    local = invoke("batch", "data/**/*.npy", "--out-dir", "local", "--units", 8, "--report", "local.json", "-q")
    remote = invoke(
        "batch", "data/**/*.npy", "--out-dir", "remote", "--units", 8, "--report", "remote.json", "--dask", dask_cluster
    )
    assert remote.exit_code == local.exit_code == 1
    assert "data/corrupt.npy: not a valid .npy file" in remote.stderr
    assert outputs("remote") == outputs("local") and len(outputs("local")) == GOOD

    def comparable(path, directory):
        report = json.loads(Path(path).read_text())
        return [
            {**record, "seconds": None, "output": record["output"] and record["output"].replace(directory, "")}
            for record in report["files"]
        ], report["counts"]

    assert comparable("remote.json", "remote") == comparable("local.json", "local")
    rerun = invoke("batch", "data/**/*.npy", "--out-dir", "remote", "--units", 8, "--dask", dask_cluster)
    assert "skipping 200" in rerun.stderr and rerun.exit_code == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_interrupt_leaves_no_partial_output_and_the_rerun_resumes(tmp_path, workers):
    rng = np.random.default_rng(0)
    for i in range(30):
        np.save(tmp_path / f"long{i:02d}.npy", rng.normal(size=(100_000, 3)).astype(np.float32))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rnncli", "batch", str(tmp_path / "long*.npy"), "--out-dir", str(out)]
    command += ["--units", "32", "--return", "final", "--workers", workers, "--report", str(tmp_path / "r.json")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not glob.glob(str(out / "*.npy")) and time.monotonic() < deadline:  # a hang guard, not a timing check
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert stdout == b""
    assert "the same command resumes" in stderr.decode() and "Traceback" not in stderr.decode()
    done = sorted(os.listdir(out))
    assert all(not name.startswith(".") for name in done) and 0 < len(done) < 30
    for name in done:  # whatever exists is complete
        x = np.load(tmp_path / name)
        np.testing.assert_array_equal(np.load(out / name), expected(x, units=32).final)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"]["interrupted"] > 0 and report["counts"]["ok"] + report["counts"]["interrupted"] == 30
    assert {Path(record["output"]).name for record in report["files"] if record["status"] == "ok"} <= set(done)
    rerun = subprocess.run(command, capture_output=True, check=True)
    assert f"skipping {len(done)} inputs whose outputs exist" in rerun.stderr.decode()
    assert len(os.listdir(out)) == 30


def test_plan_lists_shard_jobs_and_finished_ones(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a.npy").write_bytes(b"")
    paths = ["x/a.npy", "x/b.npy"]
    plan = plan_batch(paths, str(tmp_path / "o"), "npy")
    assert plan.done == [Job("x/a.npy", str(tmp_path / "o" / "a.npy"))] and [j.source for j in plan.todo] == ["x/b.npy"]
    assert plan_batch(paths, str(tmp_path / "o"), "npy", overwrite=True).done == []


def test_report_records_read_back(data):
    result = invoke("batch", "data/s001.npy", "data/corrupt.npy", "--out-dir", "o", "--report", "-", "-q")
    report = json.load(io.StringIO(result.stdout))
    assert [record["status"] for record in report["files"]] == ["failed", "ok"]
    assert set(report["files"][0]) == {
        "input",
        "status",
        "output",
        "input_shape",
        "timesteps",
        "seconds",
        "error",
        "warnings",
    }


@pytest.mark.parametrize("output", ["--report", "--save-weights"])
def test_an_output_in_a_missing_directory_fails_before_any_file_runs(data, output):
    result = invoke("batch", "data/s00*.npy", "--out-dir", "o", output, "nodir/x.npz")
    assert result.exit_code == 1
    missing = os.path.abspath("nodir")
    assert result.stderr == f"rnncli: error: nodir/x.npz: directory {missing} does not exist; create it first\n"
    assert not os.path.exists("o")


def test_outputs_that_are_inputs_are_refused_before_any_file_runs(data):
    np.savetxt("data/w.csv", data["s001"], delimiter=",")
    invoke("run", "data/s001.npy", "--units", 5, "--save-weights", "w.npz", "-q")
    kept = Path("w.npz").read_bytes()
    weights = ["--weights", "w.npz"]
    cases = [
        (["data/s00[12].npy", "--report", "data/s002.npy"], "--report data/s002.npy is also the input"),
        (["data/s001.npy", *weights, "--save-weights", "w.npz"], "--save-weights w.npz is also the --weights file"),
        (["data/w.csv", "--to", "npz", *weights], "--out-dir ./w.npz is also the --weights file"),
        (["data/s001.npy", "--out-dir", "data"], "data/s001.npy would be its own output data/s001.npy"),
    ]
    for args, message in cases:
        out_dir = [] if "--out-dir" in args else ["--out-dir", "." if "data/w.csv" in args else "o"]
        result = invoke("batch", *args, *out_dir)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith(f"rnncli: error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert Path("w.npz").read_bytes() == kept and not os.path.exists("o")
    np.testing.assert_array_equal(np.load("data/s001.npy"), data["s001"])
    again = invoke("batch", "data/*.npy", "--out-dir", "data")  # a glob: earlier outputs, left out as before
    assert again.exit_code == 0 and "leaving out" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "nope.npz"], "nope.npz: no such weights file"),
        (["--bidirectional", "--reverse"], "reverse applies to one direction"),
        (["--dask", "tcp://127.0.0.1:8786"], "pip install 'rnncli[dask]'"),
    ],
)
def test_a_batch_that_cannot_start_says_only_why(data, monkeypatch, args, message):
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = invoke("batch", "data/s00[12].npy", "--out-dir", "o", *args)
    assert result.exit_code in (1, 2)
    assert result.stderr.startswith("rnncli: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "files" not in result.stderr  # no progress line before it
    assert not os.path.exists("o")


def test_the_report_gives_the_shape_of_a_file_that_failed_on_it(data):
    report = json.loads(invoke("batch", "data/s001.npy", "data/wide.npy", "--out-dir", "o", "--report", "-").stdout)
    failed = next(record for record in report["files"] if record["status"] == "failed")
    assert failed["input"] == "data/wide.npy" and failed["input_shape"] == [20, 4]
    assert "the model takes 3 input features but the data has 4" in failed["error"]
    assert failed["error"].endswith("(W_ih is (64, 3), data/wide.npy is (20, 4))")


def test_workers_run_one_thread_each_unless_told_otherwise(monkeypatch):
    """Processes started for a batch get one BLAS thread and one rnncli thread; a user's setting stands."""
    import subprocess
    import sys

    from rnncli.batch import _blas_threads_for_children
    from rnncli.model import THREAD_VARIABLES

    probe = [sys.executable, "-c", "from rnncli.model import available_threads; print(available_threads())"]
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with _blas_threads_for_children(1):
        assert subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() == "1"
    assert not any(name in os.environ for name in THREAD_VARIABLES)  # the parent's environment is restored
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with _blas_threads_for_children(1):
        threads = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads == str(min(2, cores))
