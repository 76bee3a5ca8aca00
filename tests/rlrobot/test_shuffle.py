"""The epoch shuffle: a uniformly random order of the ready entries, without a sort."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlrobot.shuffle import feistel_permutation, random_order


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_the_feistel_network_is_a_permutation(bits):
    values = np.asarray(feistel_permutation(jax.random.PRNGKey(bits), bits))
    np.testing.assert_array_equal(np.sort(values), np.arange(2**bits))
    assert not np.array_equal(values, np.arange(2**bits))


@pytest.mark.parametrize("size", [1, 5, 512, 48_640])
def test_the_ready_entries_come_first_each_once(size):
    ready = np.array(jax.random.uniform(jax.random.PRNGKey(size), (size,)) < 0.6)
    ready[0] = True
    order = np.asarray(jax.jit(random_order)(jax.random.PRNGKey(1), jnp.asarray(ready)))
    count = int(ready.sum())
    assert order.shape == (size,) and order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order[:count]), np.flatnonzero(ready))


def test_orders_differ_by_key_and_look_uniform():
    """Over many keys, every ready entry is equally likely at every position (chi-square on a 6 × 6 table), and a
    position's neighbours are not its neighbours in the buffer."""
    ready = jnp.asarray(np.arange(40) % 7 != 3)   # 34 of 40 ready
    orders = np.asarray(jax.vmap(lambda k: random_order(k, ready))(jax.random.split(jax.random.PRNGKey(0), 6000)))
    count = int(ready.sum())
    assert len({tuple(o[:count]) for o in orders[:200]}) == 200
    first, last = orders[:, 0], orders[:, count - 1]
    for column in (first, last):
        observed = np.bincount(column, minlength=40)[np.asarray(ready)]
        expected = len(orders) / count
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        assert chi2 < 70.0, chi2   # 33 degrees of freedom: p ≈ 0.0002
    adjacent = np.abs(np.diff(orders[:, :count], axis=1))
    assert np.mean(adjacent == 1) < 0.1
