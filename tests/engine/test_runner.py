"""The batch runner alone: pad, run, cut, with no event loop and no store."""

import numpy as np
import pytest

from app.engine.runner import BatchRunner
from app.model.loader import load_model


@pytest.fixture(scope="module")
def runner():
    return BatchRunner(load_model("default"))  # per-step outputs


def zeros(runner, n):
    return [np.zeros((n, units), np.float32) for units in runner.model.spec.state_units]


def test_rows_of_any_lengths_get_what_they_get_alone(runner):
    rng = np.random.default_rng(3)
    chunks = [rng.uniform(-2, 2, (t, 1)).astype(np.float32) for t in (1, 5, 3, 5)]
    together = runner.run(chunks, zeros(runner, len(chunks)))
    for chunk, row in zip(chunks, together):
        (alone,) = runner.run([chunk], zeros(runner, 1))
        assert row.outputs.shape == (len(chunk), 1)
        np.testing.assert_allclose(row.outputs, alone.outputs, atol=1e-6)
        for got, want in zip(row.states, alone.states):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_equal_lengths_take_the_unpadded_path_with_the_same_result(runner):
    rng = np.random.default_rng(4)
    chunks = [rng.uniform(-2, 2, (4, 1)).astype(np.float32) for _ in range(3)]
    stacked = runner.run(chunks, zeros(runner, 3))
    padded = runner.run(chunks + [chunks[0][:1]], zeros(runner, 4))[
        :3
    ]  # one shorter row forces padding
    for a, b in zip(stacked, padded):
        np.testing.assert_allclose(a.outputs, b.outputs, atol=1e-6)


def test_a_row_that_overflows_is_none_and_the_others_are_unaffected(runner):
    states = zeros(runner, 2)
    states[0][0, :] = 3.4e38  # finite, but the model's arithmetic overflows on it
    rows = runner.run([np.ones((2, 1), np.float32)] * 2, states)
    (alone,) = runner.run([np.ones((2, 1), np.float32)], zeros(runner, 1))
    if rows[0] is not None:  # this model happened to saturate rather than overflow
        assert all(np.isfinite(s).all() for s in rows[0].states)
    np.testing.assert_allclose(rows[1].outputs, alone.outputs, atol=1e-6)
