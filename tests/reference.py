"""Independent reference implementations for the tests (the seed notebook's loop, generalised)."""

import numpy as np


def seed_loop(inputs, W, U, b, state=None, activation=np.tanh):  # noqa: N803 - the notebook's names
    """The seed notebook's loop: output_t = tanh(W x_t + U h_{t-1} + b), one (T, F) sequence."""
    state_t = np.zeros(U.shape[0], dtype=W.dtype) if state is None else state
    successive_outputs = []
    for input_t in inputs:
        output_t = activation(np.dot(W, input_t) + np.dot(U, state_t) + b)
        successive_outputs.append(output_t)
        state_t = output_t
    return np.stack(successive_outputs)


def params_of(model, layer=0, direction=0):
    """(W, U, b) of one cell in the seed's notation (b is the sum of both biases, or zeros)."""
    cell = model.layers[layer][direction]
    bias = cell.b_ih + cell.b_hh if cell.has_bias else np.zeros(cell.units, cell.w_ih.dtype)
    return cell.w_ih, cell.w_hh, bias
