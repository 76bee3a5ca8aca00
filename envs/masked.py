"""Compute a function only on the rows that need it: a loop over chunks of gathered rows on a CPU.

Used where a batch needs an expensive result for a few of its rows: the auto-reset of the robots that finished
(``Environment.reset_finished``) and the critic over the steps of an update window that complete a trajectory
(``rlrobot.train.window_values``). On an accelerator the whole batch is computed and the rows selected: that is
data-parallel there, and a loop whose length depends on the data would wait on the device every pass.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def map_masked(fn: Callable[[jnp.ndarray, Any], Any], mask: jnp.ndarray, operands: Any, otherwise: Any,
               chunk: int, small_chunk: int | None = None) -> Any:
    """``where(mask, fn(operands), otherwise)`` row by row (leading axes), calling ``fn`` on rows where ``mask``.

    ``fn(i, rows)`` gets a pass number ``i`` (for per-pass random keys) and a batch of rows of ``operands``, and
    returns rows shaped like ``otherwise``'s. On a CPU with ``chunk`` < the batch, it sees ``chunk`` rows at a time
    (padding rows, whose results are dropped, repeat the last row), for as many passes as the set rows need;
    otherwise it is called once on the whole batch (``i`` = 0). ``small_chunk`` (< ``chunk``): a first pass of that
    many rows is made whatever the count, so that a call where few rows are set pays for few; the passes after it,
    ``chunk``. Without it, no pass is made when no row is set.
    """
    size = mask.shape[0]
    if jax.default_backend() != "cpu" or chunk >= size:
        everything = fn(jnp.int32(0), operands)
        return jax.tree.map(lambda new, old: jnp.where(mask.reshape(mask.shape + (1,) * (old.ndim - 1)), new, old),
                            everything, otherwise)
    first = 0 if small_chunk is None else min(small_chunk, chunk)   # the rows of the pass made whatever the count
    passes = -(-max(size - first, 0) // chunk)
    rows = jnp.nonzero(mask, size=first + passes * chunk, fill_value=size)[0]  # the set rows first, then ``size``
    count = jnp.sum(mask)

    def one_pass(i: jnp.ndarray, result: Any, start: jnp.ndarray, width: int) -> Any:
        index = jax.lax.dynamic_slice(rows, (start,), (width,))
        part = jax.tree.map(lambda x: x[jnp.minimum(index, size - 1)], operands)
        return jax.tree.map(lambda r, n: r.at[index].set(n, mode="drop"), result, fn(i, part))

    result = one_pass(jnp.int32(0), otherwise, jnp.int32(0), first) if first else otherwise
    numbered_from = 1 if first else 0
    _, result = jax.lax.while_loop(
        lambda carry: first + carry[0] * chunk < count,
        lambda carry: (carry[0] + 1, one_pass(carry[0] + numbered_from, carry[1], first + carry[0] * chunk, chunk)),
        (jnp.int32(0), result))
    return result
