"""Continuation is exact: a sequence run in pieces, carrying the state, gives the bits of one whole run.

At realistic sizes (tens of features and units), on both engines. A BLAS product rounds a row
differently depending on how many rows share the call, so these sizes caught what tiny ones did not.
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
