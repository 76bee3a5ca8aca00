"""Unity's environment parameters as a player sees them: constants, and samplers drawn anew at every read.

What ``com.unity.ml-agents`` does (``SideChannels/EnvironmentParametersChannel.cs``, ``Sampler.cs``): a float message
sets the key to a constant; a sampler message (seed, type, arguments) replaces the key's entry with a new sampler
seeded with that seed, so a re-sent sampler starts its sequence again; every ``EnvironmentParameters.GetWithDefault
(key, default)`` returns the constant or a new draw. The draws use .NET's seeded ``System.Random`` (the subtractive
generator of Numerical Recipes that Mono and IL2CPP players share), in float32 as the C# code computes them:

* uniform: ``min + (float)NextDouble() * (max - min)``;
* gaussian: ``RandomNormal``, Marsaglia's polar form of Box–Muller, ``mean + st_dev * N(0, 1)`` in double, the
  second value of each pair kept for the next draw;
* multirangeuniform: an interval picked with probability proportional to its length (``Multinomial(seed + 1)`` over
  the normalised cumulative lengths), then ``min + (float)NextDouble() * (max - min)`` in it (``Random(seed)``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

F32 = np.float32
MBIG = 2**31 - 1
MSEED = 161803398
SAMPLER_KINDS = ("uniform", "gaussian", "multirangeuniform")  # the channel's sampler types 0, 1, 2


def int32(value: int) -> int:
    """``value`` wrapped as C#'s unchecked int arithmetic wraps it."""
    return (value + 2**31) % 2**32 - 2**31


class DotNetRandom:
    """``new System.Random(seed)``: ``next_double()`` is its ``NextDouble()``, ``next_int()`` its ``Next()``."""

    def __init__(self, seed: int) -> None:
        seed = int32(seed)
        mj = MSEED - (MBIG if seed == -2**31 else abs(seed))
        table = [0] * 56
        table[55], mk = mj, 1
        for i in range(1, 55):
            ii = (21 * i) % 55
            table[ii] = mk
            mk = int32(mj - mk)
            if mk < 0:
                mk += MBIG
            mj = table[ii]
        for _ in range(4):
            for i in range(1, 56):
                table[i] = int32(table[i] - table[1 + (i + 30) % 55])
                if table[i] < 0:
                    table[i] += MBIG
        self._table, self._next, self._next_p = table, 0, 21

    def next_int(self) -> int:
        self._next = self._next + 1 if self._next < 55 else 1
        self._next_p = self._next_p + 1 if self._next_p < 55 else 1
        value = int32(self._table[self._next] - self._table[self._next_p])
        if value == MBIG:
            value -= 1
        if value < 0:
            value += MBIG
        self._table[self._next] = value
        return value

    def next_double(self) -> float:
        return self.next_int() * (1.0 / MBIG)


def uniform_sampler(low: float, high: float, seed: int) -> Callable[[], float]:
    """``SamplerFactory.CreateUniformSampler``."""
    rng, low, high = DotNetRandom(seed), F32(low), F32(high)
    return lambda: float(low + F32(rng.next_double()) * (high - low))


def gaussian_sampler(mean: float, st_dev: float, seed: int) -> Callable[[], float]:
    """``SamplerFactory.CreateGaussianSampler`` (``RandomNormal``)."""
    rng, mean, st_dev = DotNetRandom(seed), float(F32(mean)), float(F32(st_dev))
    spare: list[float] = []

    def draw() -> float:
        if spare:
            return float(F32(spare.pop() * st_dev + mean))
        while True:
            u, v = rng.next_double() * 2.0 - 1.0, rng.next_double() * 2.0 - 1.0
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        s = math.sqrt(-2.0 * math.log(s) / s)
        spare.append(u * s)
        return float(F32(v * s * st_dev + mean))
    return draw


def multirange_sampler(intervals: Sequence[float], seed: int) -> Callable[[], float]:
    """``SamplerFactory.CreateMultiRangeUniformSampler``; ``intervals`` flat, ``[min0, max0, min1, max1, ...]``."""
    values = [F32(x) for x in intervals]
    lows, sizes = values[0::2], [high - low for low, high in zip(values[0::2], values[1::2])]
    if not sizes:
        raise ValueError("a multirangeuniform sampler needs at least one interval")
    total = F32(0.0)
    for size in sizes:
        total = F32(total + size)
    with np.errstate(invalid="ignore", divide="ignore"):
        cmf = [F32(size / total) for size in sizes]
    for i in range(1, len(cmf)):
        cmf[i] = F32(cmf[i] + cmf[i - 1])
    rng, pick = DotNetRandom(seed), DotNetRandom(int32(seed + 1))

    def draw() -> float:
        p = F32(pick.next_double()) * cmf[-1]
        chosen = 0
        while cmf[chosen] < p:
            chosen += 1
        return float(lows[chosen] + F32(rng.next_double()) * sizes[chosen])
    return draw


@dataclass(frozen=True)
class SamplerMessage:
    """A decoded sampler message: ``kind`` one of :data:`SAMPLER_KINDS`, its ``seed``, ``args`` (min, max), (mean,
    st_dev) or the flat intervals."""

    kind: str
    seed: int
    args: tuple[float, ...]

    def sampler(self) -> Callable[[], float]:
        """The draw function (an unknown type draws 0, as Unity's channel makes it after a warning)."""
        if self.kind == "uniform":
            return uniform_sampler(*self.args, self.seed)
        if self.kind == "gaussian":
            return gaussian_sampler(*self.args, self.seed)
        if self.kind == "multirangeuniform":
            return multirange_sampler(self.args, self.seed)
        return lambda: 0.0

    def __str__(self) -> str:
        if self.kind not in SAMPLER_KINDS:
            return f"{self.kind} (drawn as 0) seed={self.seed}"
        if self.kind == "multirangeuniform":
            pairs = [[self.args[i], self.args[i + 1]] for i in range(0, len(self.args), 2)]
            return f"multirangeuniform sampler intervals={pairs} seed={self.seed}"
        names = ("min", "max") if self.kind == "uniform" else ("mean", "st_dev")
        return f"{self.kind} sampler {names[0]}={self.args[0]:g} {names[1]}={self.args[1]:g} seed={self.seed}"


class EnvironmentParameters:
    """The player's ``Academy.Instance.EnvironmentParameters``: each key a constant or a sampler."""

    def __init__(self) -> None:
        self._entries: dict[str, Callable[[], float]] = {}
        self._sampled: dict[str, None] = {}  # the keys whose entry is a sampler, in the order they were set

    def set_float(self, key: str, value: float) -> None:
        self._entries[key] = lambda: value
        self._sampled.pop(key, None)

    def set_sampler(self, key: str, message: SamplerMessage) -> None:
        self._entries[key] = message.sampler()
        self._sampled[key] = None

    def get_with_default(self, key: str, default: float) -> float:
        entry = self._entries.get(key)
        return default if entry is None else entry()

    def sampled_keys(self) -> list[str]:
        return list(self._sampled)
