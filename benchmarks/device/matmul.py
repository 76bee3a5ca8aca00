"""The device's matmul rate: ``benchmarks``' chain of ``x = tanh(x @ w)`` in float32 (JAX's default precision: on a
recent NVIDIA GPU XLA may use TF32 for it) and in bf16, at the CPU benchmark's shape and, on an accelerator, a large
one. The CPU benchmark's float32 rate at its shape is what its NN-FLOP ceiling uses; so does this suite's."""
from __future__ import annotations

import jax.numpy as jnp

from benchmarks.__main__ import matmul_rate
from benchmarks.device.suite import Budget, log

DTYPES = (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))


def measure(shapes: tuple[tuple[int, int, int], ...], budget: Budget) -> dict:
    rows = []
    for rows_, width, iterations in shapes:
        for name, dtype in DTYPES:
            if rows and budget.left() <= 0:
                log(f"matmul: budget spent before [{rows_},{width}] {name}")
                continue
            log(f"matmul [{rows_},{width}] {name}, {iterations} iterations")
            rows.append(matmul_rate(iterations, rows_, width, dtype))
    f32 = [r for r in rows if r["dtype"] == "float32"]
    ceiling = f32[0]  # the CPU benchmark's shape: the rate the NN-FLOP ceiling uses
    return {"rows": rows, "ceiling_rate": ceiling["flops_per_second"], "ceiling_shape": ceiling["shape"],
            "peak_float32": max(r["flops_per_second"] for r in f32),
            "peak_bfloat16": max((r["flops_per_second"] for r in rows if r["dtype"] == "bfloat16"), default=None)}
