"""Tests of the compiled recurrence kernel rnncli._kernel against a plain numpy loop.

Every numerical test runs on each code path this CPU supports (AVX-512, AVX2,
portable SIMD, scalar C), forced through ``_kernel._set_isa``.
"""

import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if os.environ.get("RNNCLI_REQUIRE_KERNEL"):
    from rnncli import _kernel  # CI: a missing build is a failure, not a skip
else:
    _kernel = pytest.importorskip("rnncli._kernel", reason="the C kernel is not built (no compiler?)")

ISAS = _kernel.available_isas()
TANH, RELU, SIGMOID, LINEAR = 0, 1, 2, 3
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@contextmanager
def isa(name):
    previous = _kernel.isa()
    _kernel._set_isa(name)
    try:
        yield
    finally:
        _kernel._set_isa(previous)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    TANH: np.tanh,
    RELU: lambda x: np.maximum(x, 0.0),
    SIGMOID: _sigmoid,
    LINEAR: lambda x: x,
}


def reference(buf, u, h, activation, clip, leak, reverse):
    """The recurrence written out in float64 numpy; returns (outputs, final state)."""
    out = buf.astype(np.float64)
    u = u.astype(np.float64)
    state = h.astype(np.float64)
    steps = range(out.shape[0] - 1, -1, -1) if reverse else range(out.shape[0])
    for t in steps:
        pre = out[t] + state @ u.T
        if clip > 0:
            pre = np.clip(pre, -clip, clip)
        new = ACTIVATIONS[activation](pre)
        if leak != 1:
            new = (1 - leak) * state + leak * new
        out[t] = new
        state = new
    return out, state


def keras_problem(steps, batch, hidden, dtype, seed=0, features=8):
    """buf = x W^T + b with Keras default initialisers (glorot-uniform W, orthogonal U, zero b)."""
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6.0 / (features + max(hidden, 1)))
    w = rng.uniform(-limit, limit, (hidden, features))
    if hidden:
        q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
        u = q * np.sign(np.diag(r))
    else:
        u = np.zeros((0, 0))
    x = rng.standard_normal((steps, batch, features))
    buf = x @ w.T
    h = rng.uniform(-0.5, 0.5, (batch, hidden))
    return (
        np.ascontiguousarray(buf, dtype=dtype),
        np.ascontiguousarray(u, dtype=dtype),
        np.ascontiguousarray(h, dtype=dtype),
    )


def run_and_check(buf, u, h, activation=TANH, clip=0.0, leak=1.0, reverse=False):
    want_out, want_h = reference(buf, u, h, activation, clip, leak, reverse)
    got_out, got_h = buf.copy(), h.copy()
    assert _kernel.recur(got_out, u, got_h, activation, clip, leak, reverse) is None
    tol = TOL[buf.dtype.type]
    np.testing.assert_allclose(got_out, want_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_h, want_h, rtol=tol, atol=tol)
    return got_out, got_h


# ---------------------------------------------------------------------------
# agreement with the numpy loop
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ISAS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.integers(0, 12),
    batch=st.integers(0, 9),
    hidden=st.integers(0, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    activation=st.sampled_from([TANH, RELU, SIGMOID, LINEAR]),
    clip=st.sampled_from([0.0, 0.3, 2.5]),
    leak=st.sampled_from([1.0, 0.25, 0.9]),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_numpy_loop(name, steps, batch, hidden, dtype, activation, clip, leak, reverse, seed):
    buf, u, h = keras_problem(steps, batch, hidden, dtype, seed)
    with isa(name):
        run_and_check(buf, u, h, activation, clip, leak, reverse)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [1, 3, 8, 15, 16, 17, 33, 64, 100, 130])
@pytest.mark.parametrize("batch", [1, 2, 5, 9])
def test_long_sequences_all_tile_shapes(name, dtype, hidden, batch):
    # 50 steps: float32 within 1e-5 of the float64 loop, float64 within 1e-12
    buf, u, h = keras_problem(50, batch, hidden, dtype, seed=hidden * 31 + batch)
    with isa(name):
        for activation in (TANH, SIGMOID):
            run_and_check(buf, u, h, activation)
        run_and_check(buf, u, h, RELU, clip=3.0, leak=0.5, reverse=True)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("batch", "hidden"), [(1, 5), (3, 16), (4, 17), (9, 40), (2, 1)])
def test_strided_buffers_run_in_place_like_contiguous_ones(name, dtype, batch, hidden):
    # a batch-first (B, T, H) buffer seen as (T, B, H), and one with padded rows: no copies needed
    buf, u, h = keras_problem(30, batch, hidden, dtype, seed=batch * 7 + hidden)
    batch_first = np.ascontiguousarray(buf.transpose(1, 0, 2))
    padded = np.zeros((buf.shape[0], batch, hidden + 3), dtype)
    padded[:, :, :hidden] = buf
    with isa(name):
        want_out, want_h = run_and_check(buf, u, h, TANH, leak=0.5)
        h_batch_first, h_padded = h.copy(), h.copy()
        _kernel.recur(batch_first.transpose(1, 0, 2), u, h_batch_first, TANH, 0.0, 0.5, False)
        _kernel.recur(padded[:, :, :hidden], u, h_padded, TANH, 0.0, 0.5, False)
    np.testing.assert_array_equal(batch_first.transpose(1, 0, 2), want_out)
    np.testing.assert_array_equal(padded[:, :, :hidden], want_out)
    np.testing.assert_array_equal(padded[:, :, hidden:], 0)  # nothing written between rows
    np.testing.assert_array_equal(h_batch_first, want_h)
    np.testing.assert_array_equal(h_padded, want_h)


@pytest.mark.parametrize("name", ISAS)
def test_float64_matches_numpy_own_loop_to_1e12(name):
    # against numpy's own float64 loop (np.tanh, BLAS dot), not just our reference
    buf, u, h = keras_problem(30, 3, 48, np.float64, seed=7)
    want = buf.copy()
    state = h.copy()
    for t in range(30):
        state = np.tanh(want[t] + np.dot(state, u.T))
        want[t] = state
    got, got_h = buf.copy(), h.copy()
    with isa(name):
        _kernel.recur(got, u, got_h, TANH, 0.0, 1.0, False)
    assert np.max(np.abs(got - want)) < 1e-12
    np.testing.assert_array_equal(got_h, got[-1])


# ---------------------------------------------------------------------------
# activations element by element (U = 0, so out = act(buf))
# ---------------------------------------------------------------------------


def elementwise(x, activation):
    buf = x.reshape(1, -1, 1).copy()
    u = np.zeros((1, 1), x.dtype)
    h = np.zeros((x.size, 1), x.dtype)
    _kernel.recur(buf, u, h, activation, 0.0, 1.0, False)
    return buf.ravel()


GRID = np.concatenate(
    [np.linspace(-30, 30, 400_001), np.geomspace(1e-30, 30, 20_001), -np.geomspace(1e-30, 30, 20_001)]
)


@pytest.mark.parametrize("name", ISAS)
def test_float32_tanh_and_sigmoid_accuracy(name):
    x = GRID.astype(np.float32)
    exact = x.astype(np.float64)
    with isa(name):
        tanh_err = np.abs(elementwise(x, TANH) - np.tanh(exact))
        sig_err = np.abs(elementwise(x, SIGMOID) - _sigmoid(exact))
    assert tanh_err.max() < 5e-7
    assert sig_err.max() < 5e-7


@pytest.mark.parametrize("name", ISAS)
def test_float64_tanh_and_sigmoid_accuracy(name):
    x = GRID
    with isa(name):
        t = elementwise(x, TANH)
        s = elementwise(x, SIGMOID)
    want_t = np.tanh(x)
    assert np.all(np.abs(t - want_t) <= 4 * np.spacing(np.abs(want_t)))  # a few ulp, tiny |x| included
    assert np.max(np.abs(s - _sigmoid(x))) < 1e-15
    assert np.all(np.sign(t) == np.sign(x))


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(name, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30], dtype)
    with isa(name):
        tanh = elementwise(x, TANH)
        relu = elementwise(x, RELU)
        sig = elementwise(x, SIGMOID)
        lin = elementwise(x, LINEAR)
    np.testing.assert_array_equal(tanh, np.array([np.nan, 1, -1, 0, 1, -1], dtype))
    np.testing.assert_array_equal(relu, np.array([np.nan, np.inf, 0, 0, 1e30, 0], dtype))
    np.testing.assert_array_equal(sig, np.array([np.nan, 1, 0, 0.5, 1, 0], dtype))
    np.testing.assert_array_equal(lin, x)


# ---------------------------------------------------------------------------
# NaN propagation, clip, leak, reverse, state handling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [TANH, RELU, SIGMOID, LINEAR])
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_nan_propagates_within_its_row_only(name, dtype, activation, clip):
    buf, u, h = keras_problem(6, 3, 20, dtype, seed=3)
    buf[2, 1, 5] = np.nan
    out, state = buf.copy(), h.copy()
    with isa(name):
        _kernel.recur(out, u, state, activation, clip, 1.0, False)
    assert np.isnan(out[2, 1, 5])
    assert np.isnan(out[3:, 1]).all()  # U is dense: the NaN reaches every unit next step
    assert np.isnan(state[1]).all()
    assert not np.isnan(out[:2]).any()
    assert not np.isnan(out[:, [0, 2]]).any()
    assert not np.isnan(state[[0, 2]]).any()


@pytest.mark.parametrize("name", ISAS)
def test_nan_in_initial_state(name):
    buf, u, h = keras_problem(4, 2, 17, np.float32, seed=4)
    h[0, 3] = np.nan
    with isa(name):
        _kernel.recur(buf, u, h, TANH, 0.5, 0.7, True)
    assert np.isnan(buf[:, 0]).all()
    assert not np.isnan(buf[:, 1]).any()


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_bounds_linear_outputs(name, dtype):
    buf, u, h = keras_problem(10, 4, 24, dtype, seed=5)
    buf *= 100
    with isa(name):
        _kernel.recur(buf, u, h, LINEAR, 0.75, 1.0, False)
    assert np.abs(buf).max() == pytest.approx(0.75)


@pytest.mark.parametrize("name", ISAS)
def test_leak_zero_keeps_state(name):
    buf, u, h = keras_problem(5, 3, 19, np.float64, seed=6)
    h0 = h.copy()
    with isa(name):
        _kernel.recur(buf, u, h, TANH, 0.0, 0.0, False)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(buf, np.broadcast_to(h0, buf.shape))


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reverse_is_forward_on_flipped_time(name, dtype):
    buf, u, h = keras_problem(9, 2, 21, dtype, seed=8)
    fwd, h_fwd = np.ascontiguousarray(buf[::-1]), h.copy()
    rev, h_rev = buf.copy(), h.copy()
    with isa(name):
        _kernel.recur(fwd, u, h_fwd, TANH, 0.0, 1.0, False)
        _kernel.recur(rev, u, h_rev, TANH, 0.0, 1.0, True)
    np.testing.assert_array_equal(rev, fwd[::-1])
    np.testing.assert_array_equal(h_rev, h_fwd)
    np.testing.assert_array_equal(h_rev, rev[0])


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("batch", "cut"), [(8, 4), (13, 4), (13, 8), (40, 20), (41, 36)])
@pytest.mark.parametrize("hidden", [5, 33, 128])
def test_rows_split_into_groups_of_four_or_more_keep_their_bits(name, dtype, batch, cut, hidden):
    """What lets threads share a batch: a row's bits do not depend on the other rows of the call."""
    buf, u, h = keras_problem(9, batch, hidden, dtype, seed=batch + cut)
    whole, h_whole = buf.copy(), h.copy()
    parts, h_parts = buf.copy(), h.copy()
    with isa(name):
        _kernel.recur(whole, u, h_whole, TANH, 0.0, 1.0, False)
        _kernel.recur(parts[:, :cut], u, h_parts[:cut], TANH, 0.0, 1.0, False)
        _kernel.recur(parts[:, cut:], u, h_parts[cut:], TANH, 0.0, 1.0, False)
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(h_parts, h_whole)


@pytest.mark.parametrize("name", ISAS)
def test_splitting_the_sequence_carries_the_state(name):
    buf, u, h = keras_problem(12, 3, 33, np.float64, seed=9)
    whole, h_whole = buf.copy(), h.copy()
    first, second, h_split = buf[:5].copy(), buf[5:].copy(), h.copy()
    with isa(name):
        _kernel.recur(whole, u, h_whole, TANH, 0.0, 1.0, False)
        _kernel.recur(first, u, h_split, TANH, 0.0, 1.0, False)
        _kernel.recur(second, u, h_split, TANH, 0.0, 1.0, False)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    np.testing.assert_array_equal(h_split, h_whole)


@pytest.mark.parametrize("name", ISAS)
def test_u_is_not_modified_and_keywords_work(name):
    buf, u, h = keras_problem(3, 2, 5, np.float32, seed=10)
    u0 = u.copy()
    u.flags.writeable = False  # U is only read
    with isa(name):
        _kernel.recur(buf=buf, U=u, h=h, activation=TANH, clip=0.0, leak=1.0, reverse=False)
    np.testing.assert_array_equal(u, u0)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("shape", [(0, 2, 3), (4, 0, 3), (4, 2, 0), (0, 0, 0)])
def test_empty_dimensions(name, shape):
    steps, batch, hidden = shape
    buf = np.ones(shape, np.float32)
    u = np.ones((hidden, hidden), np.float32)
    h = np.full((batch, hidden), 0.5, np.float32)
    with isa(name):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)
    if steps == 0:
        np.testing.assert_array_equal(h, 0.5)  # no step: the state is unchanged


@pytest.mark.parametrize("name", ISAS)
def test_h_aliasing_buf_reads_the_initial_state_first(name):
    buf, u, _ = keras_problem(4, 2, 9, np.float64, seed=11)
    want_out, want_h = reference(buf, u, buf[0].copy(), TANH, 0.0, 1.0, False)
    with isa(name):
        _kernel.recur(buf, u, buf[0], TANH, 0.0, 1.0, False)
    np.testing.assert_allclose(buf[1:], want_out[1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(buf[0], want_h, rtol=1e-12, atol=1e-12)  # h, i.e. buf[0], got the final state


# ---------------------------------------------------------------------------
# project: the input projection, with a row-independent summation order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("features", [1, 2, 3, 7, 16, 33, 130])
@pytest.mark.parametrize("hidden", [1, 3, 15, 16, 17, 64, 100, 129])
def test_project_matches_a_float64_product(name, dtype, features, hidden):
    rng = np.random.default_rng(features * 1000 + hidden)
    x = rng.standard_normal((37, features)).astype(dtype)
    w = rng.standard_normal((features, hidden)).astype(dtype)
    out = np.full((37, hidden), np.nan, dtype)
    with isa(name):
        _kernel.project(x, w, out)
    want = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=TOL[dtype], atol=TOL[dtype] * features)


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    features=st.integers(1, 70),
    hidden=st.integers(1, 140),
    rows=st.integers(1, 50),
    pieces=st.lists(st.integers(0, 50), max_size=4),
    seed=st.integers(0, 2**31),
)
def test_project_gives_every_row_the_same_bits_however_the_rows_are_grouped(
    name, dtype, features, hidden, rows, pieces, seed
):
    """What BLAS does not promise: the bits of a row do not depend on its neighbours or its position."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype(dtype)
    w = rng.standard_normal((features, hidden)).astype(dtype)
    whole = np.empty((rows, hidden), dtype)
    cuts = sorted({0, rows, *(min(c, rows) for c in pieces)})
    with isa(name):
        _kernel.project(x, w, whole)
        for a, b in zip(cuts[:-1], cuts[1:]):
            part = np.empty((b - a, hidden), dtype)
            _kernel.project(x[a:b], w, part)
            np.testing.assert_array_equal(part, whole[a:b])
        shuffled = rng.permutation(rows)
        moved = np.empty_like(whole)
        _kernel.project(x[shuffled], w, moved)
    np.testing.assert_array_equal(moved, whole[shuffled])


@pytest.mark.parametrize("name", ISAS)
def test_project_takes_strided_rows(name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 12)).astype(np.float32)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    out = np.zeros((9, 11), np.float32)
    with isa(name):
        _kernel.project(x[:, :5], w, out[:, 2:9])  # rows 12 and 11 elements apart
        want = np.empty((9, 7), np.float32)
        _kernel.project(np.ascontiguousarray(x[:, :5]), w, want)
    np.testing.assert_array_equal(out[:, 2:9], want)
    assert not out[:, :2].any() and not out[:, 9:].any()


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("features", "hidden"), [(1, 1), (3, 17), (32, 64), (32, 128), (7, 129)])
@pytest.mark.parametrize("rows", [3, 23, 61])  # W read in place below 25 rows, packed into panels from 25
def test_project_adds_the_bias_last_with_the_bits_of_a_second_pass(name, dtype, features, hidden, rows):
    rng = np.random.default_rng(features + hidden)
    x = rng.standard_normal((rows, features)).astype(dtype)
    w = rng.standard_normal((features, hidden)).astype(dtype)
    bias = rng.standard_normal(hidden).astype(dtype)
    fused, two_passes = np.empty((rows, hidden), dtype), np.empty((rows, hidden), dtype)
    with isa(name):
        _kernel.project(x, w, fused, bias)
        _kernel.project(x, w, two_passes, None)
    two_passes += bias
    np.testing.assert_array_equal(fused, two_passes)


def test_project_refuses_mismatched_arguments():
    x, w, out = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernel.project(x, np.ones((2, 5), np.float32), out)
    with pytest.raises(TypeError, match="one dtype"):
        _kernel.project(x, w.astype(np.float64), out)
    with pytest.raises(TypeError, match="bias float64"):
        _kernel.project(x, w, out, np.ones(5))
    with pytest.raises(ValueError, match="bias has 4 entries, W has 5 columns"):
        _kernel.project(x, w, out, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"^project: bias of shape .* must be C-contiguous"):
        _kernel.project(x, w, out, np.ones(10, np.float32)[::2])
    read_only = np.zeros((4, 5), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"^project: out is read-only"):
        _kernel.project(x, w, read_only)
    assert not out.any()  # nothing written by a refused call
    _kernel.project(x=x, W=w, out=out, bias=np.ones(5, np.float32))  # keywords, as the signature shows
    np.testing.assert_array_equal(out, np.full((4, 5), 4.0, np.float32))


def test_releases_the_gil():
    # the scalar path, so the call lasts long enough (~50 ms) to observe
    buf, u, h = keras_problem(20_000, 1, 64, np.float64, seed=12)
    started = threading.Event()

    def work():
        started.set()
        with isa("scalar"):
            _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)

    worker = threading.Thread(target=work)
    t0 = time.perf_counter()
    worker.start()
    started.wait()
    ticks = 0
    while worker.is_alive():
        ticks += 1
    worker.join()
    elapsed = time.perf_counter() - t0
    # holding the GIL for the whole call would leave this loop a handful of iterations
    assert ticks > 1000 or elapsed < 0.005


# ---------------------------------------------------------------------------
# argument errors (nothing is modified when a call is refused)
# ---------------------------------------------------------------------------


def good_args(dtype=np.float32):
    buf, u, h = keras_problem(3, 2, 4, dtype, seed=13)
    return buf, u, h


@pytest.mark.parametrize("activation", [-1, 4, 99])
def test_bad_activation(activation):
    buf, u, h = good_args()
    with pytest.raises(ValueError, match="activation"):
        _kernel.recur(buf, u, h, activation, 0.0, 1.0, False)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_mixed_dtypes(which):
    args = list(good_args(np.float32))
    args[which] = args[which].astype(np.float64)
    before = [a.copy() for a in args]
    with pytest.raises(TypeError, match=r"float32.*float64|float64.*float32"):
        _kernel.recur(*args, TANH, 0.0, 1.0, False)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, ">f4", ">f8"])
def test_unsupported_dtypes(dtype):
    buf, u, h = (a.astype(dtype) for a in good_args())
    with pytest.raises(TypeError, match="dtype"):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


def test_non_buffer_argument():
    buf, u, h = good_args()
    with pytest.raises(TypeError, match="buffer protocol"):
        _kernel.recur(buf.tolist(), u, h, TANH, 0.0, 1.0, False)


def test_buf_rows_must_be_contiguous():
    buf, u, h = good_args()
    wide = np.zeros((*buf.shape[:2], 8), buf.dtype)
    with pytest.raises(ValueError, match=r"buf of shape \(3, 2, 4\) must be made of contiguous rows"):
        _kernel.recur(wide[:, :, ::2], u, h, TANH, 0.0, 1.0, False)


def test_fortran_order_u():
    buf, u, h = good_args()
    u = np.asfortranarray(u + np.arange(4))  # not symmetric, so not C-contiguous either
    with pytest.raises(ValueError, match=r"U of shape .* must be C-contiguous"):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


def test_read_only_buf():
    buf, u, h = good_args()
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


def test_read_only_h():
    buf, u, h = good_args()
    h.flags.writeable = False
    with pytest.raises(ValueError, match="h is read-only"):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


@pytest.mark.parametrize(
    "shapes, pattern",
    [
        (((3, 2, 4), (4, 4), (2, 4, 1)), r"h must be 2D with shape \(B, H\), got shape \(2, 4, 1\)"),
        (((3, 8), (4, 4), (2, 4)), r"buf must be 3D with shape \(T, B, H\), got shape \(3, 8\)"),
        (((3, 2, 4), (16,), (2, 4)), r"U must be 2D with shape \(H, H\), got shape \(16,\)"),
        (
            ((3, 2, 4), (4, 5), (2, 4)),
            r"buf \(3, 2, 4\) is \(T, B, H\), so U must be \(4, 4\) and h \(2, 4\); "
            r"got U \(4, 5\) and h \(2, 4\)",
        ),
        (((3, 2, 4), (4, 4), (3, 4)), r"got U \(4, 4\) and h \(3, 4\)"),
        (((3, 2, 4), (4, 4), (2, 5)), r"got U \(4, 4\) and h \(2, 5\)"),
    ],
)
def test_shape_errors_name_the_shapes(shapes, pattern):
    buf, u, h = (np.zeros(s, np.float32) for s in shapes)
    with pytest.raises(ValueError, match=pattern):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0, False)


def test_wrong_argument_count_or_type():
    buf, u, h = good_args()
    with pytest.raises(TypeError):
        _kernel.recur(buf, u, h, TANH, 0.0, 1.0)
    with pytest.raises(TypeError):
        _kernel.recur(buf, u, h, "tanh", 0.0, 1.0, False)


def test_code_path_selection():
    assert ISAS[-1] == "scalar"
    assert _kernel.isa() == ISAS[0]  # the fastest this CPU supports
    with pytest.raises(ValueError, match="unknown code path"):
        _kernel._set_isa("sse9")
