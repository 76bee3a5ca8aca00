"""``map_masked`` computes ``where(mask, fn(rows), otherwise)`` however many rows are set, calling ``fn`` on few."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.masked import map_masked

SIZE, CHUNK, SMALL = 64, 16, 4


def squares_and_passes(mask: np.ndarray, small_chunk: int | None):
    """``map_masked`` of ``x ** 2`` over ``x = 0..63``, and the widths of the passes it traced, in order."""
    widths = []

    def fn(i, rows):
        widths.append(rows.shape[0])
        return rows**2

    values = jnp.arange(SIZE, dtype=jnp.float32)
    out = jax.jit(lambda m: map_masked(fn, m, values, -jnp.ones(SIZE), CHUNK, small_chunk))(jnp.asarray(mask))
    return np.asarray(out), widths


@pytest.mark.parametrize("set_rows", [0, 1, SMALL, SMALL + 1, CHUNK + SMALL + 1, SIZE])
@pytest.mark.parametrize("small_chunk", [None, SMALL])
def test_set_rows_get_fn_the_others_keep_their_value(set_rows, small_chunk):
    mask = np.zeros(SIZE, bool)
    mask[np.random.default_rng(set_rows).choice(SIZE, set_rows, replace=False)] = True
    out, widths = squares_and_passes(mask, small_chunk)
    np.testing.assert_array_equal(out, np.where(mask, np.arange(SIZE) ** 2, -1.0))
    # On a CPU a first pass sees ``small_chunk`` rows (if given) and the loop's ``CHUNK``; elsewhere one call sees all.
    on_cpu = [SMALL, CHUNK] if small_chunk else [CHUNK]
    assert widths == (on_cpu if jax.default_backend() == "cpu" else [SIZE])


def test_the_number_of_passes_follows_the_set_rows():
    """Counted at run time: ``fn``'s pass numbers reach one per ``CHUNK`` of rows beyond the first ``SMALL``."""
    def last_pass(set_rows: int) -> int:
        seen = []

        def fn(i, rows):
            jax.debug.callback(seen.append, i)
            return rows

        mask = jnp.arange(SIZE) < set_rows
        run = jax.jit(lambda m: map_masked(fn, m, jnp.zeros(SIZE), jnp.zeros(SIZE), CHUNK, SMALL))
        jax.block_until_ready(run(mask))
        return max(int(i) for i in seen)

    if jax.default_backend() != "cpu":
        pytest.skip("on an accelerator every row is computed in one call")
    assert [last_pass(n) for n in (0, SMALL, SMALL + 1, SMALL + CHUNK, SMALL + CHUNK + 1)] == [0, 0, 1, 1, 2]


def test_without_a_small_chunk_no_row_set_means_no_call():
    if jax.default_backend() != "cpu":
        pytest.skip("on an accelerator every row is computed in one call")
    calls = []

    def fn(i, rows):
        jax.debug.callback(lambda: calls.append(1))
        return rows

    run = jax.jit(lambda m: map_masked(fn, m, jnp.zeros(SIZE), jnp.ones(SIZE), CHUNK))
    np.testing.assert_array_equal(run(jnp.zeros(SIZE, bool)), np.ones(SIZE))
    assert calls == []
    run(jnp.arange(SIZE) < 1).block_until_ready()
    assert calls == [1]
