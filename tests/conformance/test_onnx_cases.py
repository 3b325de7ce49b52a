"""ONNX's own conformance cases for the RNN operator, taken live from the onnx package and run by rnncli."""

import warnings

import numpy as np
import pytest
from onnx import helper

from rnncli.weights import from_onnx


def rnn_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collecting every operator's cases computes some noisy examples
        from onnx.backend.test.case.node import collect_testcases

        return [case for case in collect_testcases("RNN")]


CASES = rnn_cases()


def text(value):
    """ONNX string attributes arrive as bytes (or lists of bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [text(v) for v in value]
    return value


def test_the_onnx_package_ships_rnn_cases():
    names = {case.name for case in CASES}
    assert {"test_simple_rnn_defaults", "test_simple_rnn_batchwise", "test_simple_rnn_bidirectional"} <= names


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_onnx_case(case):
    graph = case.model.graph
    (node,) = [n for n in graph.node if n.op_type == "RNN"]
    decode = {a.name: text(helper.get_attribute_value(a)) for a in node.attribute}
    layout = decode.get("layout", 0)
    for inputs, outputs in case.data_sets:
        named = dict(zip([i.name for i in graph.input], inputs))
        slots = list(node.input) + [""] * (6 - len(node.input))  # X, W, R, B, sequence_lens, initial_h
        x, w, r, b, lengths, initial_h = [named.get(name) if name else None for name in slots]
        model = from_onnx(
            w,
            r,
            b,
            direction=decode.get("direction", "forward"),
            activations=decode.get("activations"),
            activation_alpha=decode.get("activation_alpha"),
            activation_beta=decode.get("activation_beta"),
            clip=decode.get("clip"),
            source=case.name,
        )
        assert model.units == (decode["hidden_size"],)
        if initial_h is not None:
            initial_h = initial_h if layout == 0 else initial_h.transpose(1, 0, 2)  # (D, B, H)
        out = model.forward(x, initial_state=initial_h, lengths=lengths, time_major=layout == 0)
        expected = dict(zip([o.name for o in graph.output], outputs))
        directions, units = model.directions, model.units[0]
        checked = 0
        if node.output[0] in expected:
            y = expected[node.output[0]]  # (T, D, B, H) or layout 1: (B, T, D, H)
            ours = out.sequence.reshape(*out.sequence.shape[:2], directions, units)
            theirs = y.transpose(0, 2, 1, 3) if layout == 0 else y
            np.testing.assert_allclose(ours, theirs, rtol=case.rtol, atol=max(case.atol, 1e-6))
            checked += 1
        if len(node.output) > 1 and node.output[1] in expected:
            y_h = expected[node.output[1]]  # (D, B, H) or layout 1: (B, D, H)
            theirs = y_h if layout == 0 else y_h.transpose(1, 0, 2)
            np.testing.assert_allclose(np.stack(out.state), theirs, rtol=case.rtol, atol=max(case.atol, 1e-6))
            checked += 1
        assert checked, "the case has no output rnncli could compare"
