"""Continuation is exact: a sequence run in pieces, carrying the state, gives the bits of one whole run.

At realistic sizes (tens of features and units), on both engines. A BLAS product rounds a row
differently depending on how many rows share the call, so these sizes caught what tiny ones did not.
The input projection shared among threads gives the bits of one thread, too.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncli.model
from rnncli import init_model

ENGINES = ["compiled", "numpy"] if rnncli.model._kernel is not None else ["numpy"]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(rnncli.model, "_kernel", None)
    return request.param


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    features=st.sampled_from([3, 16, 32, 64]),
    units=st.lists(st.sampled_from([8, 16, 32, 64]), min_size=1, max_size=3),
    batch=st.sampled_from([None, 1, 3]),
    steps=st.integers(2, 120),
    cut=st.floats(0, 1),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**31),
)
def test_split_and_continue_equals_whole(engine, features, units, batch, steps, cut, dtype, seed):
    split = min(steps - 1, max(1, int(cut * steps)))
    shape = (steps, features) if batch is None else (batch, steps, features)
    x = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    model = init_model(features, units if len(units) > 1 else units[0], layers=len(units), seed=seed, dtype=dtype)
    axis = 0 if batch is None else 1
    whole = model.forward(x)
    first = model.forward(x.take(range(split), axis=axis))
    second = model.forward(x.take(range(split, steps), axis=axis), initial_state=first.state)
    np.testing.assert_array_equal(np.concatenate([first.sequence, second.sequence], axis=axis), whole.sequence)
    assert len(second.state) == len(whole.state)
    for mine, theirs in zip(second.state, whole.state):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_step_at_a_time_equals_whole(engine, dtype):
    """What `run --stream` does: every row on its own, the state carried."""
    x = np.random.default_rng(5).normal(size=(60, 32)).astype(dtype)
    model = init_model(32, 64, seed=5, dtype=dtype)
    whole = model.forward(x)
    state, rows = None, []
    for row in x:
        out = model.forward(row[None, :], initial_state=state)
        rows.append(out.sequence)
        state = out.state
    np.testing.assert_array_equal(np.concatenate(rows), whole.sequence)


@pytest.mark.parametrize("units", ["64", "16,32,8"])
def test_the_cli_continues_a_run_from_its_saved_state_bit_for_bit(units, tmp_path):
    from click.testing import CliRunner

    from rnncli.cli import main

    x = np.random.default_rng(7).normal(size=(300, 32)).astype(np.float32)
    np.save(tmp_path / "whole.npy", x)
    np.save(tmp_path / "head.npy", x[:7])
    np.save(tmp_path / "tail.npy", x[7:])
    state = tmp_path / ("state.npz" if "," in units else "state.npy")

    def run(*args):
        result = CliRunner().invoke(main, ["run", *map(str, args), "--units", units, "-q"], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr

    run(tmp_path / "whole.npy", "-o", tmp_path / "whole_out.npy")
    run(tmp_path / "head.npy", "-o", tmp_path / "head_out.npy", "--save-state", state)
    run(tmp_path / "tail.npy", "-o", tmp_path / "tail_out.npy", "--initial-state", state)
    pieces = np.concatenate([np.load(tmp_path / "head_out.npy"), np.load(tmp_path / "tail_out.npy")])
    np.testing.assert_array_equal(pieces, np.load(tmp_path / "whole_out.npy"))


@pytest.mark.parametrize("layout", ["single", "batch-first", "time-major"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_projection_split_among_threads_equals_one_thread(engine, layout, dtype, monkeypatch):
    # blocks of 128 steps, the last one of 3: shares of a few rows, where BLAS would round differently
    shape = {"single": (1027, 32), "batch-first": (5, 259, 32), "time-major": (259, 5, 32)}[layout]
    x = np.random.default_rng(9).normal(size=shape).astype(dtype)
    model = init_model(32, [64, 48], layers=2, seed=9, dtype=dtype, bidirectional=True)
    monkeypatch.setattr(rnncli.model, "BLOCK_STEPS", 128)  # several blocks; batch-first ones project per sequence
    monkeypatch.setattr(rnncli.model, "MIN_THREAD_WORK", 1)
    used = []
    run_in_threads = rnncli.model._in_threads
    monkeypatch.setattr(rnncli.model, "_in_threads", lambda tasks: used.append(len(tasks)) or run_in_threads(tasks))
    results = []
    for threads in (1, 2, 3, 7):
        monkeypatch.setattr(rnncli.model, "available_threads", lambda threads=threads: threads)
        results.append(model.forward(x, time_major=layout == "time-major"))
    assert set(used) == {1, 2, 3, 7}
    for result in results[1:]:
        np.testing.assert_array_equal(result.sequence, results[0].sequence)
        for mine, theirs in zip(result.state, results[0].state):
            np.testing.assert_array_equal(mine, theirs)


def test_available_threads_follow_the_thread_variables(monkeypatch):
    for name in rnncli.model.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(rnncli.model.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert rnncli.model.available_threads() == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert rnncli.model.available_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the first one set wins, as batch workers rely on
    assert rnncli.model.available_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more than the cores
    assert rnncli.model.available_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # not a plain count: the next variable decides
    assert rnncli.model.available_threads() == 2


@pytest.mark.parametrize("layout", ["batch-first", "time-major"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_batch_recurrence_split_among_threads_equals_one_thread(layout, dtype, monkeypatch):
    x = np.random.default_rng(4).normal(size=(61, 40, 16)).astype(dtype)
    if layout == "time-major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    model = init_model(16, [64, 33], layers=2, seed=4, dtype=dtype, bidirectional=True)
    initial = [np.random.default_rng(k).normal(size=(61, h)).astype(dtype) for k, h in enumerate([64, 64, 33, 33])]
    monkeypatch.setattr(rnncli.model, "MIN_THREAD_WORK", 1)
    shares = []
    row_ranges = rnncli.model._row_ranges
    monkeypatch.setattr(rnncli.model, "_row_ranges", lambda *a: shares.append(row_ranges(*a)) or shares[-1])
    results = []
    for threads in (1, 2, 7):
        monkeypatch.setattr(rnncli.model, "available_threads", lambda threads=threads: threads)
        results.append(model.forward(x, initial_state=initial, time_major=layout == "time-major"))
    if rnncli.model._kernel is not None:
        assert {len(s) for s in shares} == {1, 2, 7}
        assert all(r.stop - r.start >= 4 and r.start % 4 == 0 for s in shares for r in s)
    for result in results[1:]:
        np.testing.assert_array_equal(result.sequence, results[0].sequence)
        for mine, theirs in zip(result.state, results[0].state):
            np.testing.assert_array_equal(mine, theirs)


def test_small_jobs_stay_in_the_calling_thread(monkeypatch):
    used = []
    run_in_threads = rnncli.model._in_threads
    monkeypatch.setattr(rnncli.model, "_in_threads", lambda tasks: used.append(len(tasks)) or run_in_threads(tasks))
    monkeypatch.setattr(rnncli.model, "available_threads", lambda: 8)
    init_model(3, 8).forward(np.ones((10, 3), np.float32))
    init_model(3, 8).forward(np.ones((7, 10, 3), np.float32))  # fewer than 2 * MIN_THREAD_ROWS batch rows
    assert used and set(used) == {1}


def test_an_error_in_a_thread_reaches_the_caller_after_every_thread_has_ended():
    ran = []

    def fails(stop):
        raise MemoryError("no scratch memory")

    with pytest.raises(MemoryError, match="no scratch memory"):
        rnncli.model._in_threads([lambda stop: ran.append("caller"), fails, lambda stop: ran.append("third")])
    assert sorted(ran) == ["caller", "third"]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "both directions"])
def test_chunks_of_the_recurrence_give_the_bits_of_one_call(engine, monkeypatch, bidirectional):
    x = np.random.default_rng(6).normal(size=(40, 30, 8)).astype(np.float32)
    model = init_model(8, 16, seed=6, bidirectional=bidirectional, layers=2)
    whole = model.forward(x)
    calls = []
    if rnncli.model._kernel is not None:
        real_recur = rnncli.model._kernel.recur

        class Kernel:
            project = rnncli.model._kernel.project

            @staticmethod
            def recur(buf, *args):
                calls.append(buf.shape[0])
                real_recur(buf, *args)

        monkeypatch.setattr(rnncli.model, "_kernel", Kernel)
    monkeypatch.setattr(rnncli.model, "RECURRENCE_CHUNK_WORK", 40 * 16 * 16 * 7)  # 7 steps per call
    monkeypatch.setattr(rnncli.model, "CHUNK_ROW_STEPS", 1)
    chunked = model.forward(x)
    assert engine == "numpy" or set(calls) == {7, 2}  # 30 steps: 4 calls of 7, then 2
    np.testing.assert_array_equal(chunked.sequence, whole.sequence)
    for mine, theirs in zip(chunked.state, whole.state):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.skipif(rnncli.model._kernel is None, reason="the chunked recurrence is the compiled engine's")
def test_an_interrupt_stops_every_thread_at_its_next_chunk_before_forward_returns(monkeypatch):
    import threading

    main = threading.main_thread()
    calls = {"main": 0, "helper": 0}
    recur = rnncli.model._kernel.recur
    interrupted, helper_busy = threading.Event(), threading.Event()

    class Kernel:
        project = rnncli.model._kernel.project

        @staticmethod
        def recur(*args):
            who = "main" if threading.current_thread() is main else "helper"
            calls[who] += 1
            if who == "main" and calls["main"] == 3:
                helper_busy.wait(60)
                interrupted.set()
                raise KeyboardInterrupt  # as the signal handler raises it between two chunks
            if who == "helper" and calls["helper"] == 2:
                helper_busy.set()
                interrupted.wait(60)  # the helper is mid-chunk when the caller is interrupted
            recur(*args)

    monkeypatch.setattr(rnncli.model, "_kernel", Kernel)
    monkeypatch.setattr(rnncli.model, "available_threads", lambda: 2)
    monkeypatch.setattr(rnncli.model, "MIN_THREAD_WORK", 1)
    monkeypatch.setattr(rnncli.model, "RECURRENCE_CHUNK_WORK", 32 * 16 * 16)  # one step per call: 500 chunks
    monkeypatch.setattr(rnncli.model, "CHUNK_ROW_STEPS", 1)
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        init_model(8, 16).forward(np.ones((64, 500, 8), np.float32))
    assert threading.active_count() == before  # no thread is left writing into the caller's arrays
    assert calls == {"main": 3, "helper": 2}  # the helper finished its chunk, then stopped
